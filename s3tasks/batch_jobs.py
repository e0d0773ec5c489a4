"""S3 Batch Operations (schema 1.0 and 2.0): run one registered handler per task, inline.

S3 invokes the function synchronously and wants, per task, `Succeeded`, `TemporaryFailure`
(S3 retries it) or `PermanentFailure`, plus a `resultString` for the completion report. Each
task goes through the same run records as every other event (`dispatch_event`, inline), so a
task S3 retries after a `TemporaryFailure` re-runs, and one that already succeeded is not run
twice. How a handler's outcome maps to a result code:

- it returns → `Succeeded`, `resultString` = the return value as text;
- it raises `TemporaryFailure` (or `HandlerFailure()`) → `TemporaryFailure`;
- it raises `PermanentFailure` (or `HandlerFailure(permanent=True)`) → `PermanentFailure`;
- the object is gone (`FileNotFoundError`, botocore `NoSuchKey`/404) →
  `S3TASKS["BATCH_TREAT_MISSING_KEYS_AS"]`;
- any other exception → `TemporaryFailure`: most unplanned errors (database, network,
  throttling) are transient. Raise `PermanentFailure` to stop retries; once the run has used
  up its retry limit (`max_retries` / `S3TASKS["MAX_RETRIES"]`) a failure is permanent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from s3tasks.conf import get_settings
from s3tasks.envelopes import MessageKind, parse_message
from s3tasks.events import S3Event
from s3tasks.exceptions import HandlerFailure, MalformedMessage
from s3tasks.models import HandlerRun
from s3tasks.processing.dispatch import RunOutcome, dispatch_event
from s3tasks.rules.registry import registry
from s3tasks.rules.routing import Route

logger = logging.getLogger(__name__)

SUCCEEDED = "Succeeded"
TEMPORARY_FAILURE = "TemporaryFailure"
PERMANENT_FAILURE = "PermanentFailure"
# Completion reports are CSV files read by people; keep each result short.
RESULT_STRING_LIMIT = 1024
_MISSING_KEY_CODES = frozenset({"NoSuchKey", "NoSuchVersion", "NotFound", "404"})


@dataclass(frozen=True)
class TaskResult:
    """One entry of the response's `results`."""

    task_id: str
    result_code: str
    result_string: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "taskId": self.task_id,
            "resultCode": self.result_code,
            "resultString": self.result_string,
        }


def handle_invocation(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Run every task of a Batch Operations invocation; return the response S3 expects."""

    parsed = parse_message(payload)
    if parsed.kind != MessageKind.BATCH_OPERATIONS:
        raise MalformedMessage(f"expected an S3 Batch Operations invocation, found {parsed.kind}")
    settings = get_settings()
    results = [run_task(event, settings.BATCH_HANDLER) for event in parsed.events]
    return {
        "invocationSchemaVersion": str(payload["invocationSchemaVersion"]),
        "treatMissingKeysAs": settings.BATCH_TREAT_MISSING_KEYS_AS,
        "invocationId": str(payload["invocationId"]),
        "results": [r.to_dict() for r in results],
    }


def handler_name_for(event: S3Event, default: str | None) -> str | None:
    """`userArguments["handler"]` (schema 2.0) beats `S3TASKS["BATCH_HANDLER"]`."""
    arguments = event.batch.user_arguments if event.batch is not None else {}
    chosen = arguments.get("handler")
    return chosen if isinstance(chosen, str) and chosen else default


def run_task(event: S3Event, default_handler: str | None) -> TaskResult:
    """Run the chosen handler on one task and turn what happened into a result code."""

    assert event.batch is not None, "run_task needs a Batch Operations event"
    task_id = event.batch.task_id
    name = handler_name_for(event, default_handler)
    if name is None:
        return _configuration_failure(
            task_id,
            'no handler to run: pass {"handler": "<registered name>"} in the job\'s '
            'userArguments (schema 2.0) or set S3TASKS["BATCH_HANDLER"]',
        )
    if name not in registry:
        return _configuration_failure(task_id, f"no registered handler named {name!r}")
    try:
        run = _dispatch(event, name)
    except Exception as exc:  # the database itself failed: S3 should try again later
        logger.exception("s3tasks: batch task %s could not be dispatched", task_id)
        return TaskResult(task_id, TEMPORARY_FAILURE, _describe(exc))
    if run.ok:
        return TaskResult(task_id, SUCCEEDED, _success_string(run))
    exception = run.exception  # None when the run was not attempted now (failed for good before)
    missing_as = get_settings().BATCH_TREAT_MISSING_KEYS_AS
    code = result_code_for(exception, permanent=run.permanent, missing_as=missing_as)
    text = _describe(exception) if exception is not None else run.error
    return TaskResult(task_id, code, _clip(text))


def result_code_for(
    exception: BaseException | None,
    *,
    permanent: bool = False,
    missing_as: str = PERMANENT_FAILURE,
) -> str:
    """The result code of a failed task; a vanished object gets `missing_as`.

    `permanent` is dispatch's verdict: a `PermanentFailure`, or the run's retry limit
    (`max_retries` / `S3TASKS["MAX_RETRIES"]`) used up by S3's earlier retries.
    """
    if exception is None:
        return PERMANENT_FAILURE if permanent else TEMPORARY_FAILURE
    if is_missing_object(exception):
        return missing_as
    if permanent or (isinstance(exception, HandlerFailure) and exception.permanent):
        return PERMANENT_FAILURE
    return TEMPORARY_FAILURE


def is_missing_object(exception: BaseException) -> bool:
    """Whether `exception` (or what caused it) says the object or version does not exist.

    Checked by shape, not by class, so botocore is never imported for it.
    """
    seen: set[int] = set()
    current: BaseException | None = exception
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, FileNotFoundError):
            return True
        response = getattr(current, "response", None)
        if isinstance(response, Mapping):
            error = response.get("Error") or {}
            if str(error.get("Code", "")) in _MISSING_KEY_CODES:
                return True
        current = current.__cause__ or current.__context__
    return False


def _dispatch(event: S3Event, handler_name: str) -> RunOutcome:
    """Run the one handler of a task inline; its outcome holds what it returned or raised."""
    assert event.batch is not None
    outcome = dispatch_event(
        event,
        routes=[Route(handler_name=handler_name)],
        mode="inline",  # S3 waits for a result code: only an inline run can give one
        message_id=event.batch.invocation_id[:200],
        queue_name=f"batch-operations:{event.batch.job_id}",
    )
    [run] = outcome.runs
    return run


def _configuration_failure(task_id: str, problem: str) -> TaskResult:
    logger.error("s3tasks: S3 Batch Operations task %s failed: %s", task_id, problem)
    return TaskResult(task_id, PERMANENT_FAILURE, _clip(problem))


def _success_string(run: RunOutcome) -> str:
    if not run.skipped:
        return _clip(_as_text(run.result))
    # Skipped: the run already succeeded on an earlier delivery; report what it returned then.
    summary = HandlerRun.objects.filter(pk=run.run_id).values_list("result_summary", flat=True)
    return _clip(next(iter(summary), "") or "")


def _as_text(result: Any) -> str:
    if result is None:
        return ""
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result, default=str, sort_keys=True)
    except (TypeError, ValueError):
        return repr(result)


def _describe(exception: BaseException) -> str:
    message = str(exception)
    return f"{type(exception).__name__}: {message}" if message else type(exception).__name__


def _clip(text: str) -> str:
    return text if len(text) <= RESULT_STRING_LIMIT else text[: RESULT_STRING_LIMIT - 1] + "…"
