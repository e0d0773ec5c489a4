"""The admin's "Replay selected runs" action on handler runs: a confirmation page with the
counts, then the replay; needs `s3tasks.run_handlers`; replays shown on the list and page."""

from __future__ import annotations

import pytest
from django.urls import reverse

from s3tasks.models import HandlerRun, RunState
from s3tasks.processing.dispatch import dispatch_event
from tests.admin_support import login_staff
from tests.factories import make_event, routes
from tests.handlers_for_dispatch import RUNS_BUCKET, runs_of
from tests.replay_support import REPLAYED

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:s3tasks_handlerrun_changelist"


@pytest.fixture(autouse=True)
def inline_dispatch(settings):
    settings.S3TASKS = {**settings.S3TASKS, "DISPATCH": "inline"}


@pytest.fixture
def runs() -> list[HandlerRun]:
    """Two succeeded runs and one in flight."""
    for key in ("in/a.csv", "in/b.csv", "in/c.csv"):
        dispatch_event(make_event(key), routes=routes(REPLAYED))
    HandlerRun.objects.filter(event__key="in/c.csv").update(state=RunState.RETRYING)
    return list(HandlerRun.objects.order_by("event__key"))


def replay(client, runs, *, confirm: bool):
    data = {"action": "replay_selected_runs", "_selected_action": [r.pk for r in runs]}
    if confirm:
        data["post"] = "yes"
    return client.post(reverse(CHANGELIST), data, follow=True)


def test_replay_asks_for_confirmation_with_the_count_and_changes_nothing_yet(admin_client, runs):
    html = replay(admin_client, runs, confirm=False).content.decode()
    assert "2 of the 3 selected runs will be replayed." in html
    assert 'id="replay-confirm"' in html and REPLAYED in html
    assert not HandlerRun.objects.filter(replays__gt=0).exists()
    assert runs_of(RUNS_BUCKET, "in/a.csv") == 1


def test_confirmed_replay_runs_ended_runs_once_and_reports_counts(admin_client, runs):
    html = replay(admin_client, runs, confirm=True).content.decode()
    assert "Replayed 2 runs: 2 succeeded, 1 in flight, left alone." in html
    assert [runs_of(RUNS_BUCKET, f"in/{k}.csv") for k in "abc"] == [2, 2, 1]
    replayed = HandlerRun.objects.get(event__key="in/a.csv")
    assert replayed.replays == 1 and replayed.replayed_by == "admin (admin)"


def test_replay_of_one_run_says_it_in_the_singular(admin_client, runs):
    html = replay(admin_client, runs[:1], confirm=True).content.decode()
    assert "Replayed 1 run: 1 succeeded." in html


def test_replay_across_all_pages_keeps_the_selection_on_the_confirmation(admin_client, runs):
    """Select-all on the list posts the page's checked boxes and `select_across`."""
    data = {
        "action": "replay_selected_runs",
        "select_across": "1",
        "index": "0",
        "_selected_action": [runs[0].pk],
    }
    html = admin_client.post(reverse(CHANGELIST), data).content.decode()
    assert "2 of the 3 selected runs will be replayed." in html
    assert 'name="select_across" value="1"' in html
    confirm = {k: v for k, v in data.items() if k != "index"} | {"post": "yes"}
    html = admin_client.post(reverse(CHANGELIST), confirm, follow=True).content.decode()
    assert "Replayed 2 runs" in html


def test_replay_needs_the_run_handlers_permission(client, django_user_model, runs):
    viewer = login_staff(client, django_user_model, "s3tasks.view_handlerrun")
    assert "replay_selected_runs" not in viewer.get(reverse(CHANGELIST)).content.decode()
    replay(viewer, runs, confirm=True)
    assert not HandlerRun.objects.filter(replays__gt=0).exists()
    assert runs_of(RUNS_BUCKET, "in/a.csv") == 1


def test_run_handlers_permission_allows_replay(client, django_user_model, runs):
    runner = login_staff(
        client, django_user_model, "s3tasks.view_handlerrun", "s3tasks.run_handlers"
    )
    assert "replay_selected_runs" in runner.get(reverse(CHANGELIST)).content.decode()
    html = replay(runner, runs[:1], confirm=True).content.decode()
    assert "Replayed 1 run: 1 succeeded." in html
    assert HandlerRun.objects.get(pk=runs[0].pk).replayed_by == "admin (staff)"


def test_replays_show_on_the_run_list_and_page(admin_client, runs):
    replay(admin_client, runs[:1], confirm=True)
    replay(admin_client, runs[:1], confirm=True)
    listing = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert "replayed 2×" in listing
    page = admin_client.get(reverse("admin:s3tasks_handlerrun_change", args=[runs[0].pk]))
    html = page.content.decode()
    assert "Outcome before the last replay" in html and "succeeded after 1 attempt(s)" in html
    assert "admin (admin)" in html and 'name="_save"' not in html
