"""structlog configured once per process: JSON lines on stderr, context bound per event."""

from __future__ import annotations

import logging
import sys
from typing import Any

from shipledger.settings import Settings
from shipledger.startup import without

# structlog imports rich, when installed, for console tracebacks these renderers never draw
# (`format_exc_info` turns an exception into text first; ~30 ms of `shipledger emit`/`query`),
# and greenlet for its deprecated thread-local context (we bind context per logger).
with without("rich", "greenlet"):
    import structlog

#: What `get_logger` returns.
Logger = structlog.stdlib.BoundLogger

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(settings: Settings) -> None:
    """Route structlog and stdlib logging to stderr as JSON (or console) at the set level."""
    level = _LEVELS[settings.log_level]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Third-party libraries (faust, aiokafka) log through stdlib: keep them quieter.
    logging.basicConfig(
        level=max(level, logging.WARNING),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


def get_logger(name: str, **context: Any) -> Logger:
    """A logger with `component` and the given context (deployment_id, tenant, service) bound."""
    logger: Logger = structlog.get_logger(component=name, **context)
    return logger
