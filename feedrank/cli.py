"""The ``feedrank`` command: one command group per module of :mod:`feedrank.commands`.

Every command is declared the same way (see :mod:`feedrank.options`) and
registered here from :data:`COMMANDS`. A failure a user can fix (a missing or
malformed input, a bad option or config file) is one line on stderr and exit
code 1; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import click

from feedrank.commands import (
    bento,
    data,
    dataset,
    demo,
    events,
    features,
    keys,
    metrics,
    monitor,
    pipeline,
    serve,
    serve_state,
    train,
)
from feedrank.options import Group

COMMANDS: tuple[click.Command, ...] = (
    data.data,
    features.features,
    dataset.dataset,
    train.train,
    train.evaluate,
    train.promote,
    metrics.metrics,
    monitor.monitor,
    serve.serve,
    bento.bento,
    events.events,
    serve_state.serve_state,
    keys.keys,
    demo.demo,
    pipeline.pipeline,
)
"""Every top-level command, in pipeline order (``--help`` lists them alphabetically)."""


@click.group(cls=Group)
@click.version_option(package_name="feedrank")
def main() -> None:
    """feedrank: rank the tweets a user sees by predicted engagement.

    Stages, in order: data generate -> features build -> features apply ->
    features materialize -> dataset build. `feedrank demo` runs them all.
    """


for command in COMMANDS:
    main.add_command(command)
