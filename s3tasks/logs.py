"""Logs of s3tasks' commands and its Lambda entrypoint, the way Django's own commands behave.

When the project's `LOGGING` gives the `s3tasks` loggers no handler, `configure_command_logging`
adds one writing to stderr, at the level `-v/--verbosity` asks for, as text or one JSON object
per line (`--log-format`, `S3TASKS["LOG_FORMAT"]`). When the project did configure a handler,
nothing is changed: its `LOGGING` decides where the lines go and which levels pass.

Log calls about a run or a message pass their fields with `extra={...}` (`RUN_FIELDS`);
`JsonFormatter` writes every such field next to the timestamp, level, logger and message.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from s3tasks.conf import LOG_FORMATS, get_settings

# The fields a log line about one handler run carries (`extra=`), in JSON under these names.
RUN_FIELDS = (
    "dedup_key",
    "bucket",
    "key",
    "handler",
    "run_id",
    "attempt",
    "duration_ms",
    "outcome",
)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# -v/--verbosity → level of the `s3tasks` loggers (Django's scale: 0 minimal … 3 very verbose)
VERBOSITY_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG, 3: logging.DEBUG}
# At -v 3 these loggers also get the handler, at INFO (credentials found, connection pools):
# their DEBUG dumps whole requests, so it is left to a project's own LOGGING.
AWS_SDK_LOGGERS = ("botocore", "boto3", "urllib3")
AWS_SDK_VERBOSITY = 3

# What every LogRecord has on its own; anything else in `record.__dict__` came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {
    "message",
    "asctime",
}
_CORE_KEYS = ("timestamp", "level", "logger", "message")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp (UTC), level, logger, message, then every field the
    log call passed with `extra=` (a run's dedup key, bucket, key, handler, run id, …), and the
    traceback as `exception` when there is one. Usable in a project's own `LOGGING`:
    `{"()": "s3tasks.logs.JsonFormatter"}`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _RECORD_ATTRIBUTES and name not in _CORE_KEYS:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class CommandLogHandler(logging.StreamHandler):
    """The stderr handler s3tasks adds itself; told apart from a project's own handlers.

    It writes to whatever `sys.stderr` is at the time (as `logging.lastResort` does), so a
    redirected or captured stderr gets the lines.
    """

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr


def formatter_for(log_format: str) -> logging.Formatter:
    """The formatter of `log_format` ("text" or "json")."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configured_elsewhere(logger: logging.Logger) -> bool:
    """Whether the project decided where `logger`'s lines go: a handler other than s3tasks' own
    on it or on an ancestor it propagates to (the root included), or propagation turned off."""
    current: logging.Logger | None = logger
    while current is not None:
        if any(not isinstance(h, CommandLogHandler) for h in current.handlers):
            return True
        if not current.propagate:
            return current is not logging.getLogger()  # turned off below the root: silenced
        current = current.parent
    return False


def configure_command_logging(verbosity: int = 1, log_format: str | None = None) -> bool:
    """Log s3tasks to stderr as Django's commands do, unless the project configured logging.

    `verbosity` 0 shows warnings and errors, 1 (the default) adds what happens (start, stop, each
    run), 2 adds debug lines, 3 also shows boto3/botocore/urllib3 at INFO. `log_format` is
    "text" or "json" (None: `S3TASKS["LOG_FORMAT"]`). Returns whether s3tasks' handler is now
    in place; False means the project's `LOGGING` is in charge and nothing was changed.
    Calling it again replaces the handler it added (the last command's flags win).
    """
    chosen = formatter_for(log_format or get_settings().LOG_FORMAT)
    s3tasks_logger = logging.getLogger("s3tasks")
    if configured_elsewhere(s3tasks_logger):
        return False
    handler = CommandLogHandler()
    handler.setFormatter(chosen)
    level = VERBOSITY_LEVELS[max(0, min(verbosity, 3))]
    _attach(s3tasks_logger, handler, level)
    for name in AWS_SDK_LOGGERS:
        sdk_logger = logging.getLogger(name)
        _detach(sdk_logger)
        if verbosity >= AWS_SDK_VERBOSITY and not configured_elsewhere(sdk_logger):
            _attach(sdk_logger, handler, logging.INFO)
    return True


def add_log_format_argument(parser: argparse.ArgumentParser) -> None:
    """The `--log-format` flag every s3tasks command shares."""
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="Log lines on stderr as text or one JSON object per line (default "
        "S3TASKS['LOG_FORMAT'], \"text\"). Only when your LOGGING configures no handler for "
        "the s3tasks loggers; see docs/worker.md, Logs.",
    )


# Levels the loggers had before s3tasks set them, restored when its handler is taken off.
_levels_before: dict[str, int] = {}


def _attach(logger: logging.Logger, handler: logging.Handler, level: int) -> None:
    _detach(logger)
    _levels_before[logger.name] = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)


def _detach(logger: logging.Logger) -> None:
    ours = [h for h in logger.handlers if isinstance(h, CommandLogHandler)]
    for handler in ours:
        logger.removeHandler(handler)
    if ours and logger.name in _levels_before:
        logger.setLevel(_levels_before.pop(logger.name))
