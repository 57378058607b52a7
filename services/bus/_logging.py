"""structlog, configured once: JSON lines in services, readable output on a terminal.

Every line carries the context bound with :func:`bind_message` (message id and
trace id), so one report can be followed across services.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any, Literal

import orjson
import structlog

_configured = False


def _json(event: Any, **_: Any) -> str:
    # orjson: a JSON log line costs a fraction of what the json module takes.
    return orjson.dumps(event, default=str).decode()


def configure_logging(
    log_format: Literal["auto", "json", "console"] = "auto",
    level: str = "INFO",
) -> None:
    """Set up structlog and the standard library logging once per process."""
    global _configured  # noqa: PLW0603  # configuration is process-wide by nature
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: structlog.types.Processor
    if use_json:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer(serializer=_json)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # aiokafka, uvicorn and alembic log through the standard library: render
    # their lines the same way, so a service writes one format only.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        ),
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(logging.WARNING, logging.getLevelName(level)))
    _configured = True


@contextlib.contextmanager
def quiet(logger_name: str) -> Iterator[None]:
    """Silence a library logger while its errors are expected (waiting for a broker to start)."""
    logger = logging.getLogger(logger_name)
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger for one module."""
    if not _configured:
        configure_logging()
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger


def bind_message(message_id: str | None, trace_id: str | None) -> None:
    """Put the message id and trace id on every log line of the current task."""
    structlog.contextvars.bind_contextvars(message_id=message_id, trace_id=trace_id)


def unbind_message() -> None:
    """Forget the message context of the current task."""
    structlog.contextvars.unbind_contextvars("message_id", "trace_id")
