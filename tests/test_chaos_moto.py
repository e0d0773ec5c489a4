"""Chaos, in CI: the SQS endpoint (moto's server) goes away mid-run and comes back empty.

A real `sqs_worker` must back off while it cannot reach SQS (a handful of failed receives,
not a busy loop), stay alive, and drain again once the endpoint answers. moto forgets
everything when it restarts, as a region-wide outage would not, so the test recreates the
queues under the same names (same URLs) and sends new events.
"""

from __future__ import annotations

import re
import time

import boto3
import pytest

from s3tasks.emulator import LocalEmulator
from tests.chaos_app.harness import (
    BUCKET,
    FollowupCollector,
    WorkerPool,
    event_bodies,
    event_keys,
    make_queues,
    manage,
    read_report,
    send_bodies,
)
from tests.conftest import subprocess_env
from tests.worker_support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

QUICK = (
    *("--dispatch", "inline", "--wait-time", "1", "--visibility-timeout", "3"),
    *("--concurrency", "2", "--stats-interval", "5"),
)
OUTAGE_SECONDS = 10
RECEIVE_ERROR = re.compile(r"receive from \S+ failed")


def receive_errors(pool: WorkerPool) -> int:
    return len(RECEIVE_ERROR.findall(pool.output()))


def test_sqs_endpoint_restart_mid_run_backs_off_then_drains_again(tmp_path):
    emulator = LocalEmulator(log_path=tmp_path / "moto-1.log").start()  # ours alone to restart
    pool: WorkerPool | None = None
    collector: FollowupCollector | None = None
    try:
        sqs = boto3.client(
            "sqs",
            endpoint_url=emulator.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        queues = make_queues(sqs, "chaos-moto")
        env = subprocess_env(
            S3TASKS_ENDPOINT_URL=emulator.url,
            S3TASKS_DISPATCH="inline",
            CHAOS_FOLLOWUP_QUEUE=queues.followup_name,
        )
        manage(env, "chaos", "setup", "--bucket", BUCKET)
        collector = FollowupCollector(sqs, queues.followup_url)
        collector.start()
        send_bodies(sqs, queues.url, event_bodies(event_keys(10, "before/")))
        pool = WorkerPool(env, ["--queue", queues.url, *QUICK], tmp_path, count=1)
        pool.start()
        wait_until(lambda: collector.covered() >= 10, 60, "the first 10 events handled")

        emulator.stop()
        errors_before = receive_errors(pool)
        time.sleep(OUTAGE_SECONDS)
        during = receive_errors(pool) - errors_before
        print(f"chaos: {during} failed receives while the endpoint was down {OUTAGE_SECONDS}s")
        assert pool.running(), pool.output()[-4000:]
        assert 1 <= during < 20, f"{during} failed receives in {OUTAGE_SECONDS}s: no backoff?"

        emulator = LocalEmulator(emulator.port, tmp_path / "moto-2.log").start()  # empty again
        assert make_queues(sqs, "chaos-moto") == queues  # same names, same URLs
        send_bodies(sqs, queues.url, event_bodies(event_keys(10, "after/")))
        wait_until(lambda: collector.covered() >= 20, 90, "the 10 events sent after the restart")
    finally:
        if collector is not None:
            collector.stop()
        if pool is not None:
            pool.stop()
        emulator.stop()

    report = read_report(env, 10, prefix="after/")
    assert report["lost"] == 0 and report["duplicate_side_effects"] == 0, report
    assert pool.processes[0].returncode == 0, pool.output()[-4000:]
