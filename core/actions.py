"""The engagement actions and their weights, loaded from ``actions.yaml``.

Every stage that names an action (the simulator's labels, the model's heads,
the serving score, the metric) reads :func:`load_actions`, so that a weight
changed in the YAML file changes all of them together.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.errors import UserError

DEFAULT_ACTIONS_FILE = Path(__file__).with_name("actions.yaml")

IMPRESSION = "impression"
"""Event-log action for a tweet shown to a user: exposure, not engagement (weight 0)."""


class Action(BaseModel):
    """One engagement action."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: float = Field(description="Contribution of one occurrence to weighted engagement.")
    description: str = Field(description="What the user did.")


class ActionSet(BaseModel):
    """The ordered engagement actions: the model's heads are in this order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    long_dwell_seconds: float = Field(
        gt=0, description="Viewing time (seconds) from which a view counts as a long dwell."
    )
    actions: dict[str, Action] = Field(description="Action name to its weight, in head order.")

    @field_validator("actions")
    @classmethod
    def _named_and_not_empty(cls, actions: dict[str, Action]) -> dict[str, Action]:
        if not actions:
            raise ValueError("at least one action is required")
        if IMPRESSION in actions:
            raise ValueError(f"'{IMPRESSION}' is reserved for exposure events")
        return actions

    @property
    def names(self) -> tuple[str, ...]:
        """Action names in head order."""
        return tuple(self.actions)

    @property
    def weights(self) -> tuple[float, ...]:
        """Weights in head order."""
        return tuple(a.weight for a in self.actions.values())

    @property
    def positive(self) -> tuple[str, ...]:
        """Actions with a positive weight (engagement: like, reply, retweet, long dwell)."""
        return tuple(n for n, a in self.actions.items() if a.weight > 0)

    @property
    def negative(self) -> tuple[str, ...]:
        """Actions with a negative weight (hide, report)."""
        return tuple(n for n, a in self.actions.items() if a.weight < 0)

    def weight(self, name: str) -> float:
        """The weight of one action; a clear error for an unknown name."""
        try:
            return self.actions[name].weight
        except KeyError:
            raise KeyError(f"unknown action {name!r}; known: {', '.join(self.names)}") from None


class ActionsFileError(UserError, ValueError):
    """The actions file is missing, unreadable or invalid; the message names the file."""


def load_actions(path: Path | str | None = None) -> ActionSet:
    """Load the action definitions (default: ``core/actions.yaml``).

    Raises:
        ActionsFileError: naming the file and the offending field.
    """
    return _load(Path(path) if path is not None else DEFAULT_ACTIONS_FILE)


@cache
def _load(path: Path) -> ActionSet:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ActionsFileError(f"{path}: cannot read actions file: {exc}") from exc
    try:
        return ActionSet.model_validate(raw)
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ActionsFileError(f"{path}: {fields}") from exc
