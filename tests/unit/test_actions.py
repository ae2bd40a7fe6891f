"""The one definition of actions and weights."""

from pathlib import Path

import pytest

from core.actions import ActionsFileError, load_actions

pytestmark = pytest.mark.unit


def test_defaults_are_the_published_weights_in_head_order() -> None:
    actions = load_actions()
    assert actions.names == ("like", "reply", "retweet", "long_dwell", "hide", "report")
    assert actions.weights == (0.5, 13.5, 1.0, 10.0, -74.0, -369.0)
    assert actions.negative == ("hide", "report")
    assert actions.weight("reply") == 13.5


def test_unknown_action_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="unknown action 'comment'; known: like, reply"):
        load_actions().weight("comment")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("long_dwell_seconds: 10\nactions: {}\n", "actions: Value error, at least one action"),
        (
            "long_dwell_seconds: 10\nactions:\n  impression: {weight: 1, description: x}\n",
            "'impression' is reserved",
        ),
        (
            "long_dwell_seconds: 10\nactions:\n  like: {weight: oops, description: x}\n",
            r"actions\.like\.weight",
        ),
        (
            "long_dwell_seconds: -1\nactions:\n  like: {weight: 1, description: x}\n",
            "long_dwell_seconds",
        ),
        ("actions: [unclosed\n", "cannot read actions file"),
    ],
)
def test_bad_files_name_the_file_and_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "actions.yaml"
    path.write_text(text)
    with pytest.raises(ActionsFileError, match=message) as info:
        load_actions(path)
    assert str(path) in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ActionsFileError, match="cannot read actions file"):
        load_actions(tmp_path / "nope.yaml")
