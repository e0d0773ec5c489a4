"""The Django signals s3tasks sends (the rule cache's receiver is `rules.routing.rules_changed`).

Lifecycle signals (all sent with `sender=` the handler name or `"s3tasks"`):

- `event_received(event: S3Event, record: EventRecord, message_id: str)` — sender `"s3tasks"`;
  once per distinct event (not for duplicate deliveries), once its record is written and before
  its handlers start (inline: inside the batch's transaction; defer side effects with
  `transaction.on_commit`).
- `run_started(run: HandlerRun, event: S3Event)` — sender the handler name; inside the run's
  transaction, just before the handler is called (once per attempt).
- `run_succeeded(run: HandlerRun, event: S3Event, result: Any)` — after the handler's
  transaction committed; `result` is what the handler returned.
- `run_failed(run: HandlerRun, event: S3Event, exception: BaseException, permanent: bool)` —
  after every failed attempt, once the failure is recorded; `permanent=False` means it will be
  retried (Celery retry or SQS redelivery), `True` means it will not (PermanentFailure, retries
  exhausted): alert on that one. Details in docs/dispatch.md.
"""

from __future__ import annotations

from django.dispatch import Signal

event_received = Signal()
run_started = Signal()
run_succeeded = Signal()
run_failed = Signal()
