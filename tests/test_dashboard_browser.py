"""The operations dashboard in headless Chromium at 1,400 × 900: every panel filled (runs of
several handlers, a stuck run, a queue with dead letters on moto's server, a live worker
writing its row and a gone one), reached from the admin index; its numbers move by
themselves when new runs arrive, and stay put while auto-refresh is paused. Screenshots are
saved under the test's tmp_path."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import boto3
import pytest
from django.utils import timezone

from s3tasks.admin import dashboard
from s3tasks.models import HandlerRun, Queue, RunState, WorkerHeartbeat
from s3tasks.ops.queue_depths import forget_queue_depths
from s3tasks.worker import Consumer, SqsQueueClient, WorkerOptions
from s3tasks.worker.memory_sqs import MemorySQS
from s3tasks.worker.presence import WorkerPresence
from tests import factories
from tests.browser_support import chromium_page, log_in
from tests.worker_support import QUICK, Recorder, make_queue, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.integration]

REFRESH = 2  # seconds: the page's 10 s, shortened so the test waits less
HANDLERS = {
    "project.images.make_thumbnail": (RunState.SUCCEEDED, [35, 40, 52, 61, 75, 90, 120] * 6),
    "project.demo.handlers.import_csv": (RunState.SUCCEEDED, [210, 340, 1500, 2200] * 4),
    "project.reports.rebuild_index": (RunState.FAILED, [4000, 5200, 6100]),
}


def add_runs(handler: str, state: str, durations: list[float | None]) -> None:
    factories.add_runs(
        handler, state, durations, ago=timedelta(minutes=10), unfinished_task_id="task"
    )


def history() -> None:
    for handler, (state, durations) in HANDLERS.items():
        add_runs(handler, state, durations)
    add_runs("project.reports.rebuild_index", RunState.SUCCEEDED, [3000, 3500, 4200, 4800])
    add_runs("project.demo.handlers.import_csv", RunState.RETRYING, [800, 900])
    add_runs("project.images.make_thumbnail", RunState.RUNNING, [None] * 3)
    add_runs("project.images.make_thumbnail", RunState.PENDING, [None] * 2)
    stuck = HandlerRun.objects.filter(state=RunState.PENDING).first()
    HandlerRun.objects.filter(pk=stuck.pk).update(
        lease_expires_at=timezone.now() - timedelta(minutes=3)
    )


def queues(endpoint: str) -> None:
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    dlq = sqs.create_queue(QueueName="uploads-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]
    policy = json.dumps({"deadLetterTargetArn": arn["QueueArn"], "maxReceiveCount": 5})
    url = sqs.create_queue(QueueName="uploads", Attributes={"RedrivePolicy": policy})["QueueUrl"]
    for i in range(7):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    sqs.send_message(QueueUrl=dlq, MessageBody="poison")
    dead_letter = Queue.objects.create(name="uploads-dlq", enabled=False)
    Queue.objects.create(name="uploads", dead_letter_queue=dead_letter)


def gone_worker() -> None:
    WorkerHeartbeat.objects.create(
        worker_id="gone",
        host="worker-7.internal",
        pid=4242,
        queues=["uploads"],
        version="0.1.0",
        dispatch="celery",
        concurrency=8,
        interval=15,
        started_at=timezone.now() - timedelta(hours=3),
        last_seen_at=timezone.now() - timedelta(minutes=4),
        counters={"received": 5120, "handled": 5101, "failed": 19, "in_flight": 8},
    )


def live_worker() -> tuple[Consumer, threading.Thread]:
    """A worker loop on the in-memory SQS that writes its row every second."""
    sqs = MemorySQS()
    url = make_queue(sqs, "uploads")
    for i in range(12):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    client = SqsQueueClient(sqs)
    options = WorkerOptions(**{**QUICK, "exit_when_idle": None, "concurrency": 4})
    presence = WorkerPresence(["uploads"], "inline", 4, interval=1.0)
    worker = Consumer(
        client, [client.resolve("uploads")], options, process=Recorder(), presence=presence
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return worker, thread


def summary_number(page, which: str) -> str:
    return page.inner_text(f"#s3tasks-summary-{which} strong")


@pytest.mark.django_db(transaction=True)
def test_the_dashboard_in_chromium(
    live_server, moto_endpoint, django_user_model, tmp_path, monkeypatch, settings
):
    monkeypatch.setattr(dashboard, "REFRESH_SECONDS", REFRESH)
    forget_queue_depths()
    django_user_model.objects.create_superuser("admin", "admin@example.com", "pw")
    history()
    queues(moto_endpoint)
    gone_worker()
    worker, thread = live_worker()
    try:
        wait_until(lambda: WorkerHeartbeat.objects.count() == 2, 10, "the live worker's row")
        with chromium_page(monkeypatch, width=1400, height=900) as page:
            log_in(page, live_server.url)
            page.click("text=Operations dashboard")  # from the admin index
            page.wait_for_selector("#s3tasks-dashboard")
            wait_until(
                lambda: (
                    WorkerHeartbeat.objects.exclude(worker_id="gone")
                    .filter(counters__handled=12)
                    .exists()
                ),
                10,
                "the live worker's counters",
            )
            page.reload()
            page.screenshot(path=tmp_path / "dashboard.png")
            page.screenshot(path=tmp_path / "dashboard-full.png", full_page=True)

            assert summary_number(page, "runs") == "72"
            assert summary_number(page, "stuck") == "1"
            assert summary_number(page, "dead-letters") == "1"
            assert summary_number(page, "workers") == "1"
            assert page.locator("#s3tasks-runs-chart rect").count() == 7
            thumbnails = page.locator("#s3tasks-handlers tr", has_text="make_thumbnail")
            assert "0.0%" in thumbnails.inner_text()
            uploads = page.inner_text("#s3tasks-queues tr[data-queue=uploads]")
            assert "7" in uploads and "uploads-dlq" in uploads
            workers = page.inner_text("#s3tasks-workers tbody")
            assert "live" in workers and "gone" in workers and "worker-7.internal" in workers
            assert "handled 12" in workers
            assert page.evaluate(
                "document.scrollingElement.scrollWidth <= document.scrollingElement.clientWidth"
            )

            # New runs show up without a reload.
            add_runs("project.images.make_thumbnail", RunState.SUCCEEDED, [44, 46, 48])
            page.wait_for_function(
                "document.querySelector('#s3tasks-summary-runs strong')?.textContent === '75'",
                timeout=REFRESH * 5 * 1000,
            )

            # Paused, they do not; resumed, they do.
            page.click("#s3tasks-refresh-toggle")
            assert page.inner_text("#s3tasks-refresh-status") == "Auto-refresh paused"
            add_runs("project.images.make_thumbnail", RunState.SUCCEEDED, [50])
            page.wait_for_timeout(REFRESH * 2 * 1000)
            assert summary_number(page, "runs") == "75"
            page.reload()  # the pause holds for the tab
            assert page.inner_text("#s3tasks-refresh-toggle") == "Resume auto-refresh"
            page.click("#s3tasks-refresh-toggle")
            add_runs("project.images.make_thumbnail", RunState.SUCCEEDED, [52])
            page.wait_for_function(
                "document.querySelector('#s3tasks-summary-runs strong')?.textContent === '77'",
                timeout=REFRESH * 5 * 1000,
            )
            page.screenshot(path=tmp_path / "dashboard-refreshed.png")
    finally:
        worker.stop()
        thread.join(10)
        forget_queue_depths()
