"""Telling an outage from a failure, and probing for the end of one.

A database or broker that cannot be reached is not a handler failure: the work is released
for later, not counted against the message's receives or the handler's retries. The worker
stops receiving until `probe()` says both are back.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections

logger = logging.getLogger(__name__)


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says a service is unreachable or busy (retry later), not that the work is
    wrong: database `OperationalError`/`InterfaceError` (connection lost, locked, deadlock,
    lock timeout), a broker connection error, a network error."""
    if isinstance(exc, OperationalError | InterfaceError | ConnectionError | TimeoutError):
        return True
    try:
        from kombu.exceptions import OperationalError as BrokerOperationalError
    except ImportError:  # Celery not installed: no broker to lose
        return False
    return isinstance(exc, BrokerOperationalError)


def describe(exc: BaseException) -> str:
    """One short line for a log: the exception's type and first line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def probe_database(alias: str = DEFAULT_DB_ALIAS) -> str | None:
    """None when `alias` answers `SELECT 1`, else why not (the connection is closed then)."""
    connection = connections[alias]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return f"database {alias!r} unreachable ({describe(exc)})"
    finally:
        _close_quietly(connection)  # a probe runs rarely, on its own thread: keep nothing open
    return None


def probe_broker() -> str | None:
    """None when Celery's broker accepts a connection, else why not."""
    try:
        from celery import current_app
    except ImportError:
        return None
    try:
        with current_app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=5)
    except Exception as exc:
        return f"Celery broker unreachable ({describe(exc)})"
    return None


def _close_quietly(connection: Any) -> None:
    try:
        connection.close()
    except Exception:  # already broken: nothing more to release
        logger.debug("s3tasks: closing a broken connection failed", exc_info=True)
