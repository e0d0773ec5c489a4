"""The demo app's own pieces: summary reports, upload keys, the upload page's JSON views."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from project.demo.models import ImportedFile, ImportedRow
from project.demo.tasks import build_summary, numeric_totals, report_key
from project.demo.views import upload_key
from s3tasks.models import EventRecord, HandlerRun, RunState


def test_report_key_moves_the_file_to_the_summaries_prefix():
    assert report_key("incoming/orders march.csv") == "summaries/orders march.csv.json"


def test_numeric_totals_sums_only_all_numeric_columns_exactly():
    rows = [
        {"customer": "Acme", "units": "3", "amount": "0.10"},
        {"customer": "Globex", "units": "4", "amount": "0.20"},
    ]
    assert numeric_totals(rows) == {"units": "7", "amount": "0.30"}


@pytest.mark.parametrize(
    ("filename", "key"),
    [
        ("a.csv", "incoming/a.csv"),
        ("../../etc/x.csv", "incoming/x.csv"),
        ("C:\\d\\y.csv", "incoming/y.csv"),
    ],
)
def test_upload_key_keeps_only_the_file_name_under_incoming(filename, key):
    assert upload_key(filename) == key


def test_upload_key_rejects_empty_names():
    with pytest.raises(ValueError, match="Choose a file"):
        upload_key("../")


@pytest.mark.django_db
def test_summary_counts_rows_columns_and_totals():
    imported = ImportedFile.objects.create(bucket="b", key="incoming/x.csv", rows=2)
    ImportedRow.objects.create(file=imported, line=1, data={"id": "1", "amount": "2.5"})
    ImportedRow.objects.create(file=imported, line=2, data={"id": "2", "amount": "1.5"})
    summary = build_summary(imported)
    assert summary["rows"] == 2 and summary["columns"] == ["id", "amount"]
    assert summary["totals"] == {"id": "3", "amount": "4.0"}


@pytest.mark.django_db
def test_demo_pages_need_a_staff_login(client):
    for name in ("demo:upload", "demo:presign", "demo:runs"):
        response = client.get(reverse(name))
        assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.django_db
def test_runs_endpoint_lists_recent_runs_of_the_demo_bucket(admin_client):
    event = EventRecord.objects.create(
        dedup_key="d1",
        bucket="s3tasks-demo-uploads",
        key="incoming/a.csv",
        event_name="ObjectCreated:Post",
        source="s3",
    )
    HandlerRun.objects.create(
        event=event,
        handler_name="project.demo.handlers.import_csv",
        state=RunState.SUCCEEDED,
        attempts=1,
        result_summary="imported 2 rows",
    )
    other = EventRecord.objects.create(
        dedup_key="d2", bucket="elsewhere", key="incoming/a.csv", event_name="ObjectCreated:Put"
    )
    HandlerRun.objects.create(event=other, handler_name="x", state=RunState.FAILED)
    data = json.loads(admin_client.get(reverse("demo:runs"), {"key": "incoming/a.csv"}).content)
    assert [(r["handler"], r["state"], r["result"]) for r in data["runs"]] == [
        ("import_csv", "succeeded", "imported 2 rows")
    ]


@pytest.mark.django_db
@pytest.mark.integration
def test_presign_returns_a_post_form_for_one_key_under_incoming(admin_client, moto_endpoint):
    response = admin_client.get(reverse("demo:presign"), {"filename": "../sales.csv"})
    data = json.loads(response.content)
    assert data["key"] == "incoming/sales.csv"
    assert data["url"].startswith(moto_endpoint)
    assert data["fields"]["key"] == "incoming/sales.csv" and "policy" in data["fields"]
    assert admin_client.get(reverse("demo:presign")).status_code == 400
