"""The admin's operations dashboard: runs per state and handler, p50/p95 and failure rate
(on SQLite and PostgreSQL), stuck runs with the recover button, the chart, who may see it,
and its link on the admin index. Queues: tests/test_dashboard_queues.py; workers:
tests/test_dashboard_workers.py; Chromium: tests/test_dashboard_browser.py."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from s3tasks.admin.dashboard import stacked_bars
from s3tasks.models import HandlerRun, RunState
from s3tasks.ops import run_stats
from s3tasks.ops.queue_depths import forget_queue_depths
from s3tasks.ops.run_stats import HandlerFigures, handler_figures, percentile
from s3tasks.processing.dispatch import dispatch_event
from tests.admin_support import login_staff
from tests.factories import add_runs, make_event, routes
from tests.handlers_for_dispatch import count as _registers_the_count_handler  # noqa: F401

pytestmark = pytest.mark.django_db

URL = "/admin/s3tasks/operationsdashboard/"
RESIZE = "project.images.resize"
IMPORT = "project.demo.handlers.import_csv"


@pytest.fixture(autouse=True)
def no_aws(settings):
    """No AWS here: the queue panel reads an endpoint that refuses at once."""
    settings.S3TASKS = {**settings.S3TASKS, "ENDPOINT_URL": "http://127.0.0.1:9"}
    forget_queue_depths()
    yield
    forget_queue_depths()


def mixed_history() -> None:
    """resize: 8 succeeded (10..80 ms), 2 failed (100, 200 ms), 1 running, 1 pending;
    import: 3 succeeded, 1 retrying; and runs two hours old that only the day window sees."""
    add_runs(RESIZE, RunState.SUCCEEDED, [10, 20, 30, 40, 50, 60, 70, 80])
    add_runs(RESIZE, RunState.FAILED, [100, 200])
    add_runs(RESIZE, RunState.RUNNING, [None])
    add_runs(RESIZE, RunState.PENDING, [None])
    add_runs(IMPORT, RunState.SUCCEEDED, [1000, 2000, 3000])
    add_runs(IMPORT, RunState.RETRYING, [500])
    add_runs(IMPORT, RunState.FAILED, [9000] * 5, ago=timedelta(hours=2))


def cell(html: str, handler: str, css: str) -> str:
    row = re.search(rf'<tr data-handler="{re.escape(handler)}">(.*?)</tr>', html, re.S)
    assert row, f"no row for {handler}"
    found = re.search(rf'class="num {css}[^"]*"[^>]*>([^<]*)<', row.group(1))
    assert found, f"no {css} cell for {handler}"
    return found.group(1).strip()


def segments(html: str, handler: str) -> dict[str, int]:
    bar = re.search(
        rf'<g class="s3tasks-bar" data-handler="{re.escape(handler)}"(.*?)</g>', html, re.S
    )
    assert bar, f"no bar for {handler}"
    return {
        state: int(count)
        for state, count in re.findall(r'data-state="(\w+)" data-count="(\d+)"', bar.group(1))
    }


@pytest.fixture
def viewer(client, django_user_model):
    return login_staff(client, django_user_model, "s3tasks.view_handlerrun")


# --- the numbers -------------------------------------------------------------------------


def test_the_page_shows_each_handlers_runs_failures_and_percentiles_of_the_last_hour(viewer):
    mixed_history()
    html = viewer.get(URL).content.decode()
    assert cell(html, RESIZE, "s3tasks-runs") == "12"
    assert cell(html, RESIZE, "s3tasks-failed") == "2"
    assert cell(html, RESIZE, "s3tasks-failure-rate") == "20.0%"  # 2 of 10 finished
    assert cell(html, RESIZE, "s3tasks-p50") == "55 ms"  # of 10..80, 100, 200
    assert cell(html, RESIZE, "s3tasks-p95") == "155 ms"
    assert cell(html, IMPORT, "s3tasks-runs") == "4"
    assert cell(html, IMPORT, "s3tasks-failure-rate") == "0.0%"
    assert cell(html, IMPORT, "s3tasks-p50") == "2 s"  # the retrying run's 500 ms is not in
    assert segments(html, RESIZE) == {"succeeded": 8, "failed": 2, "running": 1, "pending": 1}
    assert segments(html, IMPORT) == {"succeeded": 3, "retrying": 1}
    summary = re.search(r'id="s3tasks-summary-failures"[^>]*><strong>([^<]+)<', html)
    assert summary.group(1) == "15.4%"  # 2 failed of 13 finished, all handlers


def test_the_day_window_counts_older_runs_too(viewer):
    mixed_history()
    html = viewer.get(URL + "?window=day").content.decode()
    assert cell(html, IMPORT, "s3tasks-runs") == "9"
    assert cell(html, IMPORT, "s3tasks-failed") == "5"
    assert cell(html, IMPORT, "s3tasks-failure-rate") == "62.5%"  # 5 of 8 finished
    assert segments(html, IMPORT) == {"succeeded": 3, "failed": 5, "retrying": 1}


def test_a_handler_failing_often_is_marked_and_links_to_its_runs(viewer):
    add_runs(RESIZE, RunState.SUCCEEDED, [10] * 9)
    add_runs(RESIZE, RunState.FAILED, [10])
    html = viewer.get(URL).content.decode()
    assert 's3tasks-failure-rate bad">10.0%' in html
    link = re.search(r'<a href="([^"]+)" title="project.images.resize"', html).group(1)
    runs = viewer.get(link.replace("&amp;", "&"))
    assert runs.status_code == 200
    assert runs.context["cl"].result_count == 10


def test_an_empty_history_says_no_handler_ran(viewer):
    html = viewer.get(URL).content.decode()
    assert "No handler ran in this window." in html


def test_percentiles_interpolate_as_percentile_cont():
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([10, 20, 30, 40], 0.5) == 25
    assert percentile([10, 20, 30, 40], 0.95) == pytest.approx(38.5)


def expected_figures() -> list[HandlerFigures]:
    add_runs(RESIZE, RunState.SUCCEEDED, [float(ms) for ms in range(1, 101)])  # 1..100 ms
    add_runs(RESIZE, RunState.FAILED, [1000.0])
    add_runs(IMPORT, RunState.PENDING, [None, None])
    return handler_figures(timezone.now() - timedelta(hours=1))


def test_figures_on_this_database_match_percentile_cont():
    resize, imports = expected_figures()
    assert (resize.handler_name, resize.total, resize.count("failed")) == (RESIZE, 101, 1)
    assert resize.p50_ms == pytest.approx(51.0)
    assert resize.p95_ms == pytest.approx(96.0)
    assert resize.failure_rate == pytest.approx(1 / 101)
    assert (imports.total, imports.p50_ms, imports.failure_rate) == (2, None, None)


@pytest.mark.postgres
def test_on_postgresql_percentiles_come_from_the_database(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("computed in Python on PostgreSQL")

    monkeypatch.setattr(run_stats, "_percentiles_from_sample", never)
    resize, _imports = expected_figures()
    assert resize.p50_ms == pytest.approx(51.0)
    assert resize.p95_ms == pytest.approx(96.0)
    assert not resize.sampled


def test_elsewhere_percentiles_use_each_handlers_latest_runs(monkeypatch):
    from django.db import connection

    if connection.vendor == "postgresql":
        pytest.skip("PostgreSQL computes over the whole window")
    monkeypatch.setattr(run_stats, "SAMPLE_LIMIT", 4)
    add_runs(RESIZE, RunState.SUCCEEDED, [1000.0] * 6, ago=timedelta(minutes=30))
    add_runs(RESIZE, RunState.SUCCEEDED, [10.0, 20.0, 30.0, 40.0], ago=timedelta(minutes=1))
    [resize] = handler_figures(timezone.now() - timedelta(hours=1))
    assert resize.sampled
    assert resize.p50_ms == pytest.approx(25.0)  # the newest four, not the old slow six
    assert resize.total == 10


# --- the chart -----------------------------------------------------------------------------


def test_bars_are_as_long_as_their_runs_and_stacked_by_state():
    figures = [
        HandlerFigures("a.busy", {"succeeded": 90, "failed": 10}),
        HandlerFigures("a.quiet", {"pending": 1, "succeeded": 49}),
    ]
    chart = stacked_bars(figures, width=656, label_width=100)  # 500 px for bars
    busy, quiet = chart.bars
    assert [(s.state, s.x, s.width) for s in busy.segments] == [
        ("succeeded", 100, 450),
        ("failed", 550, 50),
    ]
    assert [(s.state, s.width) for s in quiet.segments] == [("succeeded", 245), ("pending", 5)]
    assert (busy.end, quiet.end) == (600, 350)
    assert quiet.y > busy.y and chart.height > quiet.y + chart.bar_height
    assert busy.label == "busy"


def test_a_state_with_few_runs_still_shows_one_pixel():
    chart = stacked_bars([HandlerFigures("h", {"succeeded": 100_000, "failed": 1})])
    assert [s.width for s in chart.bars[0].segments][-1] == 1


# --- who sees it, and from where ---------------------------------------------------------


def test_staff_without_view_handlerrun_cannot_open_it(client, django_user_model):
    login_staff(client, django_user_model, "s3tasks.view_queue")
    assert client.get(URL).status_code == 403
    index = client.get(reverse("admin:index")).content.decode()
    assert "Operations dashboard" not in index


def test_the_admin_index_and_the_app_page_link_to_it(viewer):
    assert reverse("admin:s3tasks_operationsdashboard_changelist") == URL
    for page in (reverse("admin:index"), reverse("admin:app_list", args=["s3tasks"])):
        html = viewer.get(page).content.decode()
        assert f'<a href="{URL}"' in html and "Operations dashboard" in html
    assert viewer.get(URL).status_code == 200


def test_the_panels_alone_are_served_for_the_refresh(viewer):
    add_runs(RESIZE, RunState.SUCCEEDED, [10])
    response = viewer.get(URL + "?panels=1")
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="s3tasks-summary"' in html and "<html" not in html
    assert cell(html, RESIZE, "s3tasks-runs") == "1"


# --- stuck runs ----------------------------------------------------------------------------


def stuck_run(key: str) -> HandlerRun:
    """A run handed to Celery whose task was lost: pending, its lease over."""
    outcome = dispatch_event(make_event(key), routes=routes("tests.dispatch.count"), mode="inline")
    HandlerRun.objects.filter(pk=outcome.runs[0].run_id).update(
        state=RunState.PENDING,
        celery_task_id="lost-task",
        lease_expires_at=timezone.now() - timedelta(minutes=2),
    )
    return HandlerRun.objects.get(pk=outcome.runs[0].run_id)


def test_stuck_runs_are_listed_and_linked_to_the_run_list(viewer):
    run = stuck_run("stuck.csv")
    html = viewer.get(URL).content.decode()
    assert re.search(r'id="s3tasks-summary-stuck" class="bad"><strong>1<', html)
    assert reverse("admin:s3tasks_handlerrun_change", args=[run.pk]) in html
    listed = viewer.get(f"/admin/s3tasks/handlerrun/?id__in={run.pk}")
    assert [r.pk for r in listed.context["cl"].result_list] == [run.pk]
    assert 'id="s3tasks-recover"' not in html  # viewing is not running handlers


def test_the_recover_button_needs_run_handlers(viewer):
    stuck_run("stuck.csv")
    assert viewer.post(URL + "recover/").status_code == 403


def test_the_recover_button_drives_stuck_runs_again(client, django_user_model, settings):
    settings.S3TASKS = {**settings.S3TASKS, "DISPATCH": "inline"}
    login_staff(client, django_user_model, "s3tasks.view_handlerrun", "s3tasks.run_handlers")
    run = stuck_run("stuck.csv")
    assert 'id="s3tasks-recover"' in client.get(URL).content.decode()
    response = client.post(URL + "recover/", {"window": "day"}, follow=True)
    assert response.redirect_chain[-1][0] == URL + "?window=day"
    assert "1 stuck run ran again." in [str(m) for m in response.context["messages"]]
    assert HandlerRun.objects.get(pk=run.pk).state == RunState.SUCCEEDED
    assert client.get(URL + "recover/").status_code == 405  # a GET changes nothing
