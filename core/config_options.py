"""Command-line options and YAML config files from the pydantic config the code runs on.

A command names the pydantic model that configures it; its options are made
from the model's fields (name, type, bounds, description, default), so no
command restates a default or a limit. ``--config FILE`` reads a YAML mapping
of the same fields, flags override it, and the model validates the merged
values: a refused value is one line naming the field and where it came from,
the flag or the file.

The model comes from a function that imports it, because configs live beside
heavy code (``TrainConfig`` beside torch) and ``feedrank --help`` should not
wait for it: the options are made the first time the command parses its
arguments or shows its own help.

This sits in the foundation because two entry points use it: the ``feedrank``
CLI and ``python -m training`` under torchrun, which imports no orchestration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import annotated_types
import click
import yaml
from click.core import ParameterSource
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from core.workspace import REPO_ROOT

FieldPath = tuple[str, ...]
"""A field of the model, nested models included: ``("model", "architecture")``."""
Build = Callable[[dict[str, Any], dict[str, Any]], BaseModel]
"""Makes the config from the merged values and the command's other parameters.

It pops the parameters it consumes (``--preset``), so the callback does not get them.
"""

_UNGIVEN = (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)
"""Where an option's value comes from when the user did not give it."""
CONFIG_FILE_PARAM = "config_file"
CONFIG_PARAM = "config"
"""The callback's argument that receives the validated config."""


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping of field values in a YAML file (nested models as nested mappings)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise click.ClickException(f"{path}: cannot read config file: {exc}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise click.ClickException(f"{path}: a config file is a mapping of field: value")
    return raw


def model_fields(
    model: type[BaseModel], prefix: FieldPath = ()
) -> Iterator[tuple[FieldPath, FieldInfo]]:
    """Every leaf field of ``model``, nested models flattened."""
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from model_fields(annotation, (*prefix, name))
        else:
            yield (*prefix, name), info


def _bounded(kind: type, metadata: Sequence[Any]) -> click.ParamType:
    """``int``/``float`` with the field's ``ge``/``gt``/``le``/``lt`` as a click range."""
    limits: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            limits["min"] = item.ge
        elif isinstance(item, annotated_types.Gt):
            limits.update(min=item.gt, min_open=True)
        elif isinstance(item, annotated_types.Le):
            limits["max"] = item.le
        elif isinstance(item, annotated_types.Lt):
            limits.update(max=item.lt, max_open=True)
    if kind is int:
        return click.IntRange(**limits) if limits else click.INT
    return click.FloatRange(**limits) if limits else click.FLOAT


def _param_type(annotation: Any, metadata: Sequence[Any]) -> click.ParamType:
    if get_origin(annotation) is Literal:
        return click.Choice([str(value) for value in get_args(annotation)])
    if annotation in (int, float):
        return _bounded(annotation, metadata)
    if annotation is str:
        return click.STRING
    if annotation is Path:
        return click.Path(path_type=Path)
    raise TypeError(f"no command-line option for a field of type {annotation!r}")


def field_option(path: FieldPath, info: FieldInfo, extra_names: Sequence[str] = ()) -> click.Option:
    """The option of one field: ``--max-epochs``; nested: ``--model-architecture``.

    Its default is the field's, for ``--help``; only a value given on the
    command line overrides the file (see :meth:`ConfigCommand.invoke`).
    """
    flag = "--" + "-".join(path).replace("_", "-")
    name = "__".join(path)
    attrs: dict[str, Any] = {"help": info.description}
    if info.default is not PydanticUndefined:
        attrs.update(default=info.default, show_default=True)
    annotation = info.annotation
    if annotation is bool:
        return click.Option([f"{flag}/--no-{flag[2:]}", name], **attrs)
    if get_origin(annotation) is tuple:
        item = get_args(annotation)[0]
        attrs.update(multiple=True, type=_param_type(item, ()))
        attrs["help"] = f"{info.description} Repeat the option for each value."
    else:
        attrs["type"] = _param_type(annotation, info.metadata)
    return click.Option([flag, *extra_names, name], **attrs)


def _put(values: dict[str, Any], path: FieldPath, value: Any) -> None:
    node = values
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value


def _one_line(exc: ValidationError, file: Path | None, flags: Mapping[FieldPath, str]) -> str:
    """Each refused value as ``SOURCE: FIELD: reason``, SOURCE the flag or the file."""
    parts = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        flag = next((f for p, f in flags.items() if loc[: len(p)] == p), None)
        source = flag or (str(file) if file is not None else "config")
        parts.append(f"{source}: {'.'.join(loc) or 'config'}: {error['msg']}")
    return "; ".join(parts)


class ConfigCommand(click.Command):
    """A command configured by a pydantic model: generated options and ``--config FILE``.

    The callback receives the validated model as ``config`` in place of the
    generated options.

    Args:
        config: returns the model class (imported when first needed).
        only: dotted fields that get an option (default: every field); the
            others can still be set in the file.
        names: extra option names per dotted field, e.g. ``{"max_epochs": ["--epochs"]}``.
        build: makes the config from the merged values and the other
            parameters (default: the model's own validation).
    """

    def __init__(
        self,
        *args: Any,
        config: Callable[[], type[BaseModel]],
        only: Sequence[str] | None = None,
        names: Mapping[str, Sequence[str]] | None = None,
        build: Build | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.config_model = config
        self.only = only
        self.names = dict(names or {})
        self.build = build
        self._generated: list[tuple[FieldPath, click.Option]] | None = None
        self.config_file_option = click.Option(
            ["--config", CONFIG_FILE_PARAM],
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            metavar="FILE",
            help="YAML file of config fields; the options given here override it.",
        )

    def generated_options(self) -> list[tuple[FieldPath, click.Option]]:
        """The model's fields and their options, made once."""
        if self._generated is None:
            self._generated = [
                (path, field_option(path, info, self.names.get(".".join(path), ())))
                for path, info in model_fields(self.config_model())
                if self.only is None or ".".join(path) in self.only
            ]
        return self._generated

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        own, rest = params[: len(self.params)], params[len(self.params) :]
        generated = [option for _, option in self.generated_options()]
        return [*own, self.config_file_option, *generated, *rest]

    def invoke(self, ctx: click.Context) -> Any:
        file: Path | None = ctx.params.pop(CONFIG_FILE_PARAM, None)
        values = read_config_file(file) if file is not None else {}
        flags: dict[FieldPath, str] = {}
        for path, option in self.generated_options():
            value = ctx.params.pop(str(option.name), None)
            if ctx.get_parameter_source(str(option.name)) not in _UNGIVEN:
                _put(values, path, value)
                flags[path] = option.opts[0]
        build = self.build or (lambda merged, _params: self.config_model().model_validate(merged))
        try:
            ctx.params[CONFIG_PARAM] = build(values, ctx.params)
        except ValidationError as exc:
            raise click.ClickException(_one_line(exc, file, flags)) from exc
        return super().invoke(ctx)


workspace_option = click.option(
    "--workspace",
    type=click.Path(file_okay=False, path_type=Path),
    default=REPO_ROOT,
    show_default="the repository root",
    envvar="FEEDRANK_WORKSPACE",
    help="Folder holding feature_repo/ and data/ (env FEEDRANK_WORKSPACE).",
)
"""``--workspace``: the folder a command works in (see :class:`core.workspace.Workspace`)."""
