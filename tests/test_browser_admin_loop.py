"""The whole loop in a real browser: log in, bind a handler to a rule in the admin, sync it
through the confirmation page, upload through the demo page (presigned POST straight to the
emulated bucket), and watch a real `sqs_worker` process run it to "succeeded"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from project.demo.handlers import DEMO_BUCKET
from project.demo.setup import configure_demo_buckets
from s3tasks.models import HandlerRun, NotificationRule, RunState
from tests.browser_support import TIMEOUT_MS, chromium_page, log_in
from tests.conftest import ROOT, subprocess_env

# The demo pages are mounted only in demo mode (S3TASKS_DEMO=1): the URLconf it selects.
pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.urls("project.demo.site_urls"),
]

HANDLER = "project.demo.handlers.import_csv"


@pytest.fixture
def browser_page(monkeypatch):
    with chromium_page(monkeypatch) as page:
        yield page


@pytest.fixture
def worker(moto_endpoint):
    """Started on demand (after sync made the queue), stopped at the end of the test."""
    processes: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        env = subprocess_env(S3TASKS_ENDPOINT_URL=moto_endpoint, S3TASKS_LOG="WARNING")
        env.pop("CELERY_BROKER_URL", None)  # follow-up tasks run eagerly in the worker
        process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "sqs_worker",
                "--dispatch",
                "inline",
                "--wait-time",
                "1",
                "--exit-when-idle",
                "90",
            ],
            cwd=ROOT,
            env=env,
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def create_rule_with_binding(page, base_url: str) -> None:
    page.goto(f"{base_url}/admin/s3tasks/notificationrule/add/")
    page.fill("#id_name", "CSV uploads (from the browser test)")
    page.select_option("#id_bucket", label=DEMO_BUCKET)
    page.check("input[name=events][value='s3:ObjectCreated:*']")
    page.fill("#id_prefix", "incoming/")
    page.fill("#id_suffix", ".csv")
    page.select_option("#id_bindings-0-handler_name", HANDLER)
    page.click("input[name=_save]")
    page.wait_for_selector("ul.messagelist li.success")


def sync_through_confirmation(page, base_url: str) -> str:
    page.goto(f"{base_url}/admin/s3tasks/bucket/")
    page.check("#action-toggle")
    page.select_option("select[name=action]", "sync_to_aws")
    page.click("button[name=index]")
    page.wait_for_selector("#sync-plan")
    plan = page.inner_text("#sync-plan")
    page.click("input[value='Apply these changes']")
    message = page.wait_for_selector("ul.messagelist li")
    return plan + "\n" + message.inner_text()


def upload_through_demo_page(page, base_url: str, csv_file: Path) -> None:
    page.goto(f"{base_url}/demo/")
    page.set_input_files("#upload-file", str(csv_file))
    page.click("#upload-form input[type=submit]")
    page.wait_for_function(
        "document.getElementById('upload-status').textContent.startsWith('Uploaded')"
    )


@pytest.mark.django_db(transaction=True)
def test_rule_sync_upload_and_run_in_the_browser(
    live_server, browser_page, worker, moto_endpoint, django_user_model, tmp_path
):
    django_user_model.objects.create_superuser("admin", "admin@example.com", "pw")
    NotificationRule.objects.all().delete()  # start from what this test creates in the UI
    configure_demo_buckets([live_server.url])
    page = browser_page

    log_in(page, live_server.url)
    create_rule_with_binding(page, live_server.url)
    rule = NotificationRule.objects.get(name="CSV uploads (from the browser test)")
    assert list(rule.bindings.values_list("handler_name", flat=True)) == [HANDLER]

    outcome = sync_through_confirmation(page, live_server.url)
    assert "s3tasks-events" in outcome and "Synced to AWS:" in outcome
    worker()

    csv_file = tmp_path / "browser orders.csv"
    csv_file.write_text("order_id,amount\n1,2.50\n2,4.00\n")
    upload_through_demo_page(page, live_server.url, csv_file)
    row = page.wait_for_selector("#runs tr.run-succeeded", timeout=TIMEOUT_MS)
    assert "import_csv" in row.inner_text() and "imported 2 rows" in row.inner_text()

    # The status line follows the run to its end, not just to "waiting for the worker".
    page.wait_for_function(
        "document.getElementById('upload-status').textContent.includes('import_csv succeeded')"
    )
    run = HandlerRun.objects.get(handler_name=HANDLER, event__key="incoming/browser orders.csv")
    assert run.state == RunState.SUCCEEDED
    assert run.event.event_name == "ObjectCreated:Post"
    # The follow-up command (after the import committed) wrote the report elsewhere.
    page.wait_for_selector("#runs tr.run-succeeded td:has-text('summaries/browser orders.csv')")
    page.goto(f"{live_server.url}/admin/s3tasks/handlerrun/?state__exact=succeeded")
    assert "incoming/browser orders.csv" in page.content()
