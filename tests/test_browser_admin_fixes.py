"""What the admin looks like in a real browser after the fixes of issue 12: rule events picked
from checkboxes, a bucket's pending edits shown after a rule changed, the run list readable at
1,400 px with humanized durations, and the demo's status line following the run to its end.
Screenshots of each page are saved under the test's tmp_path."""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone

from project.demo.handlers import DEMO_BUCKET
from project.demo.setup import configure_demo_buckets
from s3tasks.events import EventSource, S3Event
from s3tasks.models import EventRecord, HandlerRun, NotificationRule, RunState
from s3tasks.processing.dispatch import dispatch_event
from s3tasks.provisioning.service import sync
from tests.browser_support import chromium_page, log_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.urls("project.demo.site_urls"),
]

HANDLER = "project.demo.handlers.import_csv"
LONG_KEY = (
    "incoming/"
    + "/".join(["2026", "11", "30", "a-rather-long-folder-name"] * 3)
    + "/quarterly orders with a long file name.csv"
)


@pytest.fixture
def wide_page(monkeypatch):
    with chromium_page(monkeypatch, width=1400, height=900) as page:
        yield page


def add_rule_with_checkboxes(page, base_url: str, shots) -> None:
    page.goto(f"{base_url}/admin/s3tasks/notificationrule/add/")
    page.fill("#id_name", "archive copies")
    page.select_option("#id_bucket", label=DEMO_BUCKET)
    page.check("input[name=events][value='s3:ObjectCreated:Put']")
    page.check("input[name=events][value='s3:ObjectCreated:Copy']")
    page.fill("#id_prefix", "archive/")
    page.select_option("#id_bindings-0-handler_name", HANDLER)
    page.screenshot(path=shots / "rule-add.png", full_page=True)
    page.click("input[name=_save]")
    page.wait_for_selector("ul.messagelist li.success")


def past_runs(count: int) -> None:
    """Finished runs with long keys, errors and durations from milliseconds to minutes."""
    durations = [209.909, 1500.0, 123_000.0, 0.2, 45_678.0]
    for i in range(count):
        record = EventRecord.objects.create(
            dedup_key=uuid.uuid4().hex,
            bucket=DEMO_BUCKET,
            key=LONG_KEY if i % 2 else f"incoming/orders-{i}.csv",
            event_name="ObjectCreated:Put",
            source=EventSource.S3,
        )
        failed = i % 3 == 2
        HandlerRun.objects.create(
            event=record,
            handler_name=HANDLER,
            state=RunState.FAILED if failed else RunState.SUCCEEDED,
            attempts=1,
            started_at=timezone.now(),
            finished_at=timezone.now(),
            duration_ms=durations[i % len(durations)],
            error="ValueError: line 3 has 4 columns, expected 2; " * 5 if failed else "",
        )


def fits_without_scrolling(page) -> bool:
    """The change list's table is no wider than its box (no horizontal scroll bar)."""
    return page.evaluate(
        "() => { const box = document.querySelector('#changelist .results');"
        " return box.scrollWidth <= box.clientWidth; }"
    )


def edit_rule_events(page, base_url: str, rule: NotificationRule, shots) -> None:
    page.goto(f"{base_url}/admin/s3tasks/notificationrule/{rule.pk}/change/")
    assert page.is_checked("input[name=events][value='s3:ObjectCreated:Put']")
    assert page.is_checked("input[name=events][value='s3:ObjectCreated:Copy']")
    assert not page.is_checked("input[name=events][value='s3:ObjectCreated:*']")
    page.uncheck("input[name=events][value='s3:ObjectCreated:Copy']")
    page.screenshot(path=shots / "rule-change.png", full_page=True)
    page.click("input[name=_save]")
    page.wait_for_selector("ul.messagelist li.success")


@pytest.mark.django_db(transaction=True)
def test_admin_fixes_seen_in_chromium(
    live_server, wide_page, moto_endpoint, django_user_model, tmp_path, settings
):
    settings.S3TASKS = {**settings.S3TASKS, "DISPATCH": "inline", "RULES_CHECK_INTERVAL": 0}
    django_user_model.objects.create_superuser("admin", "admin@example.com", "pw")
    configure_demo_buckets([live_server.url])
    assert sync([DEMO_BUCKET]).ok
    page, base, shots = wide_page, live_server.url, tmp_path
    log_in(page, base)

    # Events are checkboxes of S3's event names; the bucket's status shows each edit pending.
    add_rule_with_checkboxes(page, base, shots)
    rule = NotificationRule.objects.get(name="archive copies")
    assert sorted(rule.events) == ["s3:ObjectCreated:Copy", "s3:ObjectCreated:Put"]
    page.goto(f"{base}/admin/s3tasks/bucket/")
    row = page.locator("#result_list tr", has_text=DEMO_BUCKET).first
    assert "1 change pending — sync to apply" in row.inner_text()
    edit_rule_events(page, base, rule, shots)
    rule.refresh_from_db()
    assert rule.events == ["s3:ObjectCreated:Put"]
    page.goto(f"{base}/admin/s3tasks/bucket/")
    page.screenshot(path=shots / "bucket-list.png", full_page=True)
    assert "2 changes pending — sync to apply" in row.inner_text()
    assert fits_without_scrolling(page)

    # The run list at 1,400 px: humanized durations, clipped keys, no horizontal scrolling.
    past_runs(6)
    page.goto(f"{base}/admin/s3tasks/handlerrun/")
    page.screenshot(path=shots / "run-list.png", full_page=True)
    listing = page.inner_text("#result_list")
    assert "210 ms" in listing and "1.5 s" in listing and "2 min 3 s" in listing
    assert "209.909" not in listing
    assert page.locator(f"#result_list span[title='s3://{DEMO_BUCKET}/{LONG_KEY}']").count() == 3
    assert fits_without_scrolling(page)

    # A rule links to the runs it routes; a run's page says its duration the same way.
    code_rule = NotificationRule.objects.get(bucket__name=DEMO_BUCKET, code_key__contains="import")
    page.goto(f"{base}/admin/s3tasks/notificationrule/{code_rule.pk}/change/")
    page.click("a.s3tasks-rule-runs")
    page.wait_for_selector("#result_list")
    assert f"rule={code_rule.pk}" in page.url
    assert page.locator("#result_list tbody tr").count() == 6
    page.goto(f"{base}/admin/s3tasks/handlerrun/?rule={rule.pk}")
    assert page.locator("#result_list tbody tr").count() == 0
    run = HandlerRun.objects.get(duration_ms=123_000.0)
    page.goto(f"{base}/admin/s3tasks/handlerrun/{run.pk}/change/")
    page.screenshot(path=shots / "run-detail.png", full_page=True)
    assert page.inner_text(".field-duration .readonly") == "2 min 3 s"

    # The demo's status line follows the upload's run to its end.
    page.goto(f"{base}/demo/")
    csv_file = tmp_path / "status orders.csv"
    csv_file.write_text("order_id,amount\n1,2.50\n2,4.00\n")
    page.set_input_files("#upload-file", str(csv_file))
    page.click("#upload-form input[type=submit]")
    page.wait_for_function(
        "document.getElementById('upload-status').textContent.includes('waiting for the worker')"
    )
    event = S3Event(  # what the worker would dispatch for S3's notification of the upload
        bucket=DEMO_BUCKET,
        key="incoming/status orders.csv",
        event_name="ObjectCreated:Post",
        event_time=timezone.now(),
        etag=uuid.uuid4().hex,
        source=EventSource.S3,
    )
    assert dispatch_event(event, mode="inline").ok
    page.wait_for_function(
        "document.getElementById('upload-status').textContent.includes('import_csv succeeded')"
    )
    page.screenshot(path=shots / "demo-status.png", full_page=True)
    status = page.inner_text("#upload-status")
    assert status.startswith("Uploaded incoming/status orders.csv: import_csv succeeded in ")
    assert status.endswith("imported 2 rows")
    assert page.get_attribute("#upload-status", "class") == "status-succeeded"
