"""Chaos, in CI: three real `sqs_worker` processes on PostgreSQL drain S3 events from moto's
server while one of them is killed with SIGKILL again and again (and replaced at once).

The handler (tests/chaos_app/handlers.py) inserts a row with no unique constraint and
publishes a follow-up to a second queue in the run's transaction. Nothing may be lost, no side
effect may happen twice, every follow-up must arrive; duplicated follow-ups (the relay's window
between SQS accepting a send and marking it sent) are counted and reported, not failed on.
A larger run: `python benchmarks/chaos.py` (docs/benchmarks.md).
"""

from __future__ import annotations

import boto3
import pytest

from tests.chaos_app.harness import make_queues
from tests.chaos_app.run import ChaosRun, run_chaos
from tests.conftest import subprocess_env

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]

QUICK = (
    *("--dispatch", "inline", "--wait-time", "1", "--visibility-timeout", "3"),
    *("--concurrency", "4", "--stats-interval", "5"),
)


def test_kill_9_of_draining_workers_loses_nothing_and_duplicates_no_side_effect(
    moto_endpoint, tmp_path
):
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    queues = make_queues(sqs, "chaos-kill", max_receive_count=10)
    env = subprocess_env(
        S3TASKS_ENDPOINT_URL=moto_endpoint,
        S3TASKS_DISPATCH="inline",
        S3TASKS_CONN_MAX_AGE="60",
        DJANGO_DEBUG="0",
    )
    plan = ChaosRun(events=160, per_message=2, workers=3, worker_args=QUICK, kills=4, timeout=100)

    result, pool, schedule = run_chaos(sqs, env, queues, plan, tmp_path)

    print(f"chaos: {result.followups_duplicated} duplicated follow-up(s) over {result.kills} kills")
    context = f"{result}\n{schedule.log}\n{pool.output()[-6000:]}"
    assert result.drained, context
    assert result.kills == plan.kills, context
    assert result.lost == 0, context  # every event has a succeeded run and its side effect
    assert result.duplicate_side_effects == 0, context
    assert result.events_with_two_followups == 0, context  # no handler ran twice
    assert result.followups_sent == result.events, context
    assert result.outbox_unsent == 0 and result.dlq == 0, context
