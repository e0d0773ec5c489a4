"""Recording malformed messages: one `MessageFailure` row per queue + message id, written the
same way by `sqs_worker` and by the Lambda entrypoint.

A malformed message is never deleted for being malformed: it stays in SQS (the worker backs
it off, Lambda lists it in `batchItemFailures`) until the queue moves it to its dead-letter
queue. The row tells an operator what was wrong without reading the DLQ. Writing it can fail
(the database is down); the caller then still leaves the message in SQS, so nothing is lost.
"""

from __future__ import annotations

import json
import logging
import reprlib
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import IntegrityError
from django.utils import timezone

from s3tasks.envelopes.limits import storable
from s3tasks.models import MessageFailure
from s3tasks.processing.messages import InboundMessage, MessageOutcome, Status

logger = logging.getLogger(__name__)

BODY_EXCERPT = 2000  # characters of the body kept on the row
REASON_LIMIT = 4000
ID_LIMIT = 200  # MessageFailure.queue_name / message_id
MAX_COUNT = 2**31 - 1  # what the receive_count column holds


def record_message_failure(
    *, queue_name: str, message_id: str, receive_count: int, reason: str, body: Any
) -> None:
    """Upsert the row of one malformed message; raises if the database refuses it.

    Every value is cut and cleaned first (no NUL, no lone surrogate), so a message that is
    malformed *because* of such characters can still be recorded on PostgreSQL.
    """

    key = {
        "queue_name": storable_text(queue_name, ID_LIMIT),
        "message_id": storable_text(message_id, ID_LIMIT),
    }
    now = timezone.now()
    values = {
        "receive_count": min(max(int(receive_count), 0), MAX_COUNT),
        "reason": storable_text(reason, REASON_LIMIT),
        "body_excerpt": storable_text(body_excerpt(body), BODY_EXCERPT),
        "last_seen_at": now,
    }
    try:
        MessageFailure.objects.update_or_create(
            **key, defaults=values, create_defaults={**values, "first_seen_at": now}
        )
    except IntegrityError:  # another worker created the row meanwhile: update it
        MessageFailure.objects.update_or_create(**key, defaults=values)


def record_malformed_outcomes(
    messages: Sequence[InboundMessage], outcomes: Sequence[MessageOutcome]
) -> int:
    """Record every malformed message of a processed batch; never raises (logs instead).

    Returns how many rows were written. A failure to write leaves the message as it was:
    the caller reports it as failed either way.
    """
    written = 0
    for message, outcome in zip(messages, outcomes, strict=True):
        if outcome.status != Status.MALFORMED:
            continue
        try:
            record_message_failure(
                queue_name=message.queue_name,
                message_id=message.message_id,
                receive_count=message.receive_count,
                reason=outcome.error,
                body=message.body,
            )
        except Exception:
            logger.exception(
                "s3tasks: could not record malformed message %s; it stays in SQS",
                message.message_id,
            )
        else:
            written += 1
    return written


def body_excerpt(body: Any) -> str:
    """The start of a message body as text; a decoded body (a dict) is written back as JSON."""
    if isinstance(body, str):
        return body[:BODY_EXCERPT]
    if isinstance(body, bytes | bytearray):
        return bytes(body[: BODY_EXCERPT * 4]).decode("utf-8", "replace")[:BODY_EXCERPT]
    if isinstance(body, Mapping):
        try:
            return json.dumps(body, ensure_ascii=False, default=repr)[:BODY_EXCERPT]
        except (ValueError, TypeError, RecursionError):  # NaN, odd keys, nesting too deep
            pass
    try:
        return _REPR.repr(body)[:BODY_EXCERPT]
    except ValueError:  # holds an integer too long for Python to print
        return f"<{type(body).__name__} that cannot be shown>"


def storable_text(text: Any, limit: int) -> str:
    """`text` cut to `limit` characters, with NUL and lone surrogates written as escapes."""
    clipped = str(text)[:limit]
    if storable(clipped):
        return clipped
    escaped = clipped.replace("\x00", "\\x00").encode("utf-8", "backslashreplace")
    return escaped.decode("utf-8")[:limit]


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 500
_REPR.maxlevel = 6
