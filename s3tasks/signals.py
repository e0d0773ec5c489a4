"""Django signals s3tasks sends, and the receivers that keep the rule cache fresh.

Lifecycle signals (all sent with `sender=` the handler name or `"s3tasks"`):

- `event_received(event: S3Event, record: EventRecord, message_id: str)`
- `run_started(run: HandlerRun, event: S3Event)`
- `run_succeeded(run: HandlerRun, event: S3Event, result: Any)`
- `run_failed(run: HandlerRun, event: S3Event, exception: BaseException, permanent: bool)`
"""

from __future__ import annotations

from typing import Any

from django.dispatch import Signal

event_received = Signal()
run_started = Signal()
run_succeeded = Signal()
run_failed = Signal()


def rules_changed(**kwargs: Any) -> None:
    """Receiver for save/delete of configuration models: bump the version, drop our cache."""
    from s3tasks.models import RulesVersion
    from s3tasks.routing import router

    if kwargs.get("raw"):
        return
    RulesVersion.bump()
    router.invalidate()
