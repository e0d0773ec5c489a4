"""The backfill admin: a read-only list with progress, and cancelling (its own permission)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from s3tasks.models import Backfill
from tests.admin_support import login_staff

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:s3tasks_backfill_changelist"


def make_backfill(**fields) -> Backfill:
    defaults = {"bucket": "acme-uploads", "prefix": "in/", "mode": "inline"}
    return Backfill.objects.create(**{**defaults, **fields})


def test_the_list_shows_each_backfill_s_progress_and_nobody_adds_or_edits_one(client, admin_user):
    make_backfill(listed=1500, expected=3000, matched=1200, dispatched=1100, skipped=90)
    client.force_login(admin_user)

    page = client.get(reverse(CHANGELIST))

    assert page.status_code == 200
    text = page.content.decode()
    assert "1,500 / 3,000 (50 %)" in text and "acme-uploads" in text
    assert reverse("admin:s3tasks_backfill_add") not in text
    row = Backfill.objects.get()
    detail = client.get(reverse("admin:s3tasks_backfill_change", args=[row.pk]))
    assert detail.status_code == 200 and 'name="_save"' not in detail.content.decode()


def test_cancel_stops_running_interrupted_and_failed_backfills_but_not_finished_ones(
    client, admin_user
):
    running, failed = make_backfill(), make_backfill(state=Backfill.State.FAILED)
    done = make_backfill(state=Backfill.State.COMPLETED)
    client.force_login(admin_user)

    response = client.post(
        reverse(CHANGELIST),
        {"action": "cancel", "_selected_action": [running.pk, failed.pk, done.pk]},
        follow=True,
    )

    assert "Cancelled 2 backfills" in response.content.decode()
    states = dict(Backfill.objects.values_list("pk", "state"))
    assert states == {running.pk: "cancelled", failed.pk: "cancelled", done.pk: "completed"}


def test_cancelling_needs_its_own_permission_beyond_viewing(client):
    row = make_backfill()
    login_staff(client, get_user_model(), "s3tasks.view_backfill")

    page = client.get(reverse(CHANGELIST))
    assert page.status_code == 200 and 'value="cancel"' not in page.content.decode()
    client.post(reverse(CHANGELIST), {"action": "cancel", "_selected_action": [row.pk]})
    assert Backfill.objects.get().state == "running"

    client.logout()
    client.cookies.clear()
    get_user_model().objects.all().delete()
    login_staff(client, get_user_model(), "s3tasks.view_backfill", "s3tasks.cancel_backfill")
    assert 'value="cancel"' in client.get(reverse(CHANGELIST)).content.decode()
