"""What the service refuses beyond the request schemas, and how a refusal is logged.

- :class:`EventWindow`: an event's timestamp must lie inside a window around
  the server's clock (``max_future`` ahead, ``max_age`` back). The clocks are
  the wall clock and, for a workspace with a simulated world, the world's
  clock (its end: the "now" the demo ranks and logs at); a timestamp inside
  either window passes. A refusal is a pydantic ``ValidationError`` naming
  ``[index, "timestamp"]``, which BentoML answers as a 400 with the same body
  as a schema error. It also keeps times pandas cannot hold (year 2262 and
  later) away from the Feast push.
- :class:`ClientErrorLogFilter`: BentoML logs every refused request with a full
  ERROR traceback (4.6 MB of log for ~1.5k bad requests). The filter turns the
  records of 4xx answers into one WARNING line without a traceback; 5xx keep
  theirs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from bentoml.exceptions import BentoMLException
from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

BENTOML_HTTP_LOGGER = "bentoml._internal.server.http_app"
"""The logger BentoML's ``log_exception`` writes refused requests to."""
LOG_CHARS = 300
"""The longest exception message a WARNING line keeps."""


class Timed(Protocol):
    """Anything with an aware ``timestamp`` (an ``Event``)."""

    @property
    def timestamp(self) -> datetime:
        """When it happened (timezone-aware)."""
        raise NotImplementedError


class EventWindow:
    """Accepts event times within ``[clock - max_age, clock + max_future]`` of some clock.

    Args:
        max_future: how far past a clock an event may be (client clock skew).
        max_age: how far before a clock an event may be (late delivery, retries).
        fixed_clocks: clocks that do not move (the simulated world's end); the
            wall clock is always one of the clocks.
    """

    def __init__(
        self, max_future: timedelta, max_age: timedelta, fixed_clocks: Sequence[datetime] = ()
    ) -> None:
        self.max_future = max_future
        self.max_age = max_age
        self.fixed_clocks = tuple(fixed_clocks)

    def _windows(self) -> list[tuple[datetime, datetime]]:
        clocks = (datetime.now(UTC), *self.fixed_clocks)
        return [(c - self.max_age, c + self.max_future) for c in clocks]

    def check(self, events: Sequence[Timed]) -> None:
        """Raise a ``ValidationError`` listing every event whose time is outside all windows."""
        windows = self._windows()
        errors: list[InitErrorDetails] = []
        for index, event in enumerate(events):
            ts = event.timestamp
            if any(lo <= ts <= hi for lo, hi in windows):
                continue
            too_new = all(ts > hi for _, hi in windows)
            errors.append(
                {
                    "type": PydanticCustomError(
                        "timestamp_out_of_window",
                        "timestamp is more than {limit} past the server's clock"
                        if too_new
                        else "timestamp is more than {limit} before the server's clock",
                        {"limit": str(self.max_future if too_new else self.max_age)},
                    ),
                    "loc": (index, "timestamp"),
                    "input": ts.isoformat(),
                }
            )
        if errors:
            raise ValidationError.from_exception_data("list[Event]", errors)


def client_error_status(exc: BaseException | None) -> int | None:
    """The 4xx status BentoML answers ``exc`` with, or None for a server error."""
    if isinstance(exc, ValidationError):
        return 400
    if isinstance(exc, BentoMLException) and 400 <= int(exc.error_code) < 500:
        return int(exc.error_code)
    return None


class ClientErrorLogFilter(logging.Filter):  # pylint: disable=too-few-public-methods  # a filter
    """Rewrites records of refused (4xx) requests into one WARNING line without a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        status = client_error_status(exc)
        if status is None:
            return True
        summary = " ".join(str(exc).split())[:LOG_CHARS]
        record.args = (record.getMessage(), status, type(exc).__name__, summary)
        record.msg = "%s (%d %s: %s)"
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
        return True


def install_client_error_log_filter() -> None:
    """Add the filter to BentoML's HTTP logger once (idempotent)."""
    logger = logging.getLogger(BENTOML_HTTP_LOGGER)
    if not any(isinstance(f, ClientErrorLogFilter) for f in logger.filters):
        logger.addFilter(ClientErrorLogFilter())
