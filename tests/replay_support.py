"""Handlers the replay tests run again (imported once, as `tests.replay_support`, by every test
module that needs them, so each is registered once)."""

from __future__ import annotations

from s3tasks import PermanentFailure
from s3tasks.events import S3Event
from s3tasks.rules.registry import s3_handler
from tests.handlers_for_dispatch import RUNS_BUCKET, count_run

REPLAYED = "tests.replay.counted"
FLAKY = "tests.replay.flaky"
BROKEN = {"on": False}  # switched on by a test to make both handlers fail


@s3_handler(name=REPLAYED)
def counted(event: S3Event) -> str:
    count_run(RUNS_BUCKET, event.key)  # rolled back when it fails below
    if BROKEN["on"]:
        raise PermanentFailure(f"cannot handle {event.key}")
    return f"handled {event.key}"


@s3_handler(name=FLAKY, max_retries=3)
def flaky(event: S3Event) -> None:
    if BROKEN["on"]:
        raise RuntimeError("flaky")
