"""Chaos, in CI: the database goes down mid-drain and comes back.

The test runs a PostgreSQL cluster of its own (Debian's `pg_createcluster`, a free port from
5440 up; the shared cluster on 5432 is never touched), drains S3 events from moto's server
with two real `sqs_worker` processes, stops the cluster for `OUTAGE_SECONDS` (`-m fast`: every
connection ends), starts it again and expects every event handled once and none in the
dead-letter queue: a worker that cannot record anything must stop receiving instead of using
up the messages' receive counts. The cluster is dropped afterwards, pass or fail.
"""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest

from tests.chaos_app.cluster import PgCluster, tools_available
from tests.chaos_app.harness import make_queues, manage
from tests.chaos_app.run import ChaosRun, Outage, run_chaos
from tests.conftest import need, subprocess_env

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

OUTAGE_SECONDS = 8
# Backoff capped at 1 s: a worker that kept receiving through the outage would take a message
# past the queue's 5 receives within it (the old worker sent 60% of the events to the DLQ),
# so the test stays short and still tells.
QUICK = (
    *("--dispatch", "inline", "--wait-time", "1", "--visibility-timeout", "3"),
    *("--concurrency", "4", "--stats-interval", "5", "--max-backoff", "1"),
)


@pytest.fixture
def own_cluster() -> Iterator[PgCluster]:
    missing = tools_available()
    need(missing is None, missing or "")
    cluster = PgCluster.create("s3chaos")
    try:
        cluster.create_database("chaos")
        yield cluster
    finally:
        cluster.drop()


def test_database_outage_mid_drain_sends_no_event_to_the_dlq(moto_endpoint, own_cluster, tmp_path):
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    queues = make_queues(sqs, "chaos-outage", max_receive_count=5)
    env = {
        **subprocess_env(S3TASKS_ENDPOINT_URL=moto_endpoint, S3TASKS_DISPATCH="inline"),
        **own_cluster.env("chaos"),
        "S3TASKS_CONN_MAX_AGE": "60",
        "DJANGO_DEBUG": "0",
    }
    manage(env, "migrate", "--verbosity", "0", timeout=180)
    outage = Outage(OUTAGE_SECONDS, own_cluster.stop, own_cluster.start, at_fraction=0.3)
    plan = ChaosRun(events=80, workers=2, worker_args=QUICK, outage=outage, timeout=120)

    result, pool, schedule = run_chaos(sqs, env, queues, plan, tmp_path)

    print(f"chaos: {schedule.log}, drained in {result.elapsed:.1f}s, {result.dlq} in the DLQ")
    context = f"{result}\n{schedule.log}\n{pool.output()[-6000:]}"
    assert any("outage ended" in line for line in schedule.log), context
    assert result.dlq == 0, context
    assert result.drained and result.lost == 0, context
    assert result.duplicate_side_effects == 0 and result.followups_sent == result.events, context
