"""The demo app's own pieces: its handlers (tested the way a user tests theirs, with
`s3tasks.testing`), summary reports, upload keys, the upload page's views, who may use them
and when they exist at all."""

from __future__ import annotations

import base64
import json
import re

import pytest
import requests
from django.contrib.auth.models import Permission
from django.urls import NoReverseMatch, reverse
from moto import mock_aws

from project.demo.handlers import DEMO_BUCKET
from project.demo.models import ImportedFile, ImportedRow
from project.demo.tasks import build_summary, numeric_totals, report_key
from project.demo.views import MAX_UPLOAD_BYTES, presigned_upload, upload_key
from s3tasks import EnqueueTask
from s3tasks.aws import client, reset_clients
from s3tasks.models import EventRecord, HandlerRun, RunState
from s3tasks.storage import reset_storages
from s3tasks.testing import deliver, make_s3_event, s3_notification
from tests.demo_support import policy_violations

DEMO_URLS = "project.demo.site_urls"  # ROOT_URLCONF while the demo runs (S3TASKS_DEMO=1)
DEMO_PAGES = [("demo:upload", "get"), ("demo:presign", "post"), ("demo:runs", "get")]
IMPORT_CSV = "project.demo.handlers.import_csv"
FORGET_CSV = "project.demo.handlers.forget_csv"
ORDERS = "id,amount\n1,2.5\n2,1.5\n"


@pytest.fixture
def upload(aws_credentials):
    """Put an object in the demo bucket of an in-process S3 (moto): `upload(key, text)`."""
    with mock_aws():
        reset_clients()
        reset_storages()
        client("s3").create_bucket(Bucket=DEMO_BUCKET)

        def put(key: str, text: str) -> int:
            client("s3").put_object(Bucket=DEMO_BUCKET, Key=key, Body=text.encode())
            return len(text.encode())

        yield put
    reset_clients()
    reset_storages()


# --- the handlers ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_uploaded_csv_is_imported_and_its_summary_enqueued_for_after_commit(upload):
    key = "incoming/orders march.csv"
    event = make_s3_event(DEMO_BUCKET, key, size=upload(key, ORDERS))
    assert event.raw["s3"]["object"]["key"] == "incoming/orders+march.csv"  # as S3 sends it
    delivery = deliver(event)
    assert delivery.handlers_run == [IMPORT_CSV]
    assert delivery.run_of(IMPORT_CSV).result == "imported 2 rows"
    imported = ImportedFile.objects.get(bucket=DEMO_BUCKET, key=key)
    assert [row.data for row in imported.row_set.order_by("line")] == [
        {"id": "1", "amount": "2.5"},
        {"id": "2", "amount": "1.5"},
    ]
    assert delivery.followups == (
        EnqueueTask("project.demo.tasks.write_import_summary", (DEMO_BUCKET, key)),
    )
    assert imported.summary_key == ""  # captured, not sent: no report was written


@pytest.mark.django_db
def test_a_redelivered_upload_is_not_imported_twice(upload):
    key = "incoming/once.csv"
    body = s3_notification(make_s3_event(DEMO_BUCKET, key, size=upload(key, ORDERS)))
    assert deliver(body).handlers_run == [IMPORT_CSV]
    again = deliver(body)
    assert again.handlers_run == [] and again.followups == () and again.runs[0].skipped
    assert ImportedRow.objects.filter(file__key=key).count() == 2


@pytest.mark.django_db
def test_a_removed_csv_is_forgotten_and_its_report_removal_enqueued(upload):
    key = "incoming/draft (old).csv"
    deliver(make_s3_event(DEMO_BUCKET, key, size=upload(key, ORDERS)))
    delivery = deliver(make_s3_event(DEMO_BUCKET, key, event_name="ObjectRemoved:Delete"))
    assert delivery.handlers_run == [FORGET_CSV]
    assert delivery.followups == (EnqueueTask("project.demo.tasks.delete_import_summary", (key,)),)
    imported = ImportedFile.objects.get(bucket=DEMO_BUCKET, key=key)
    assert imported.removed and imported.rows == 0 and not imported.row_set.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["other/orders.csv", "incoming/orders.txt"])
def test_uploads_outside_incoming_or_not_csv_run_no_handler(key):
    delivery = deliver(make_s3_event(DEMO_BUCKET, key))
    assert delivery.runs == () and delivery.ok


# --- summaries -------------------------------------------------------------------------------


def test_report_key_moves_the_file_to_the_summaries_prefix():
    assert report_key("incoming/orders march.csv") == "summaries/orders march.csv.json"


def test_numeric_totals_sums_only_all_numeric_columns_exactly():
    rows = [
        {"customer": "Acme", "units": "3", "amount": "0.10"},
        {"customer": "Globex", "units": "4", "amount": "0.20"},
    ]
    assert numeric_totals(rows) == {"units": "7", "amount": "0.30"}


@pytest.mark.django_db
def test_summary_counts_rows_columns_and_totals():
    imported = ImportedFile.objects.create(bucket="b", key="incoming/x.csv", rows=2)
    ImportedRow.objects.create(file=imported, line=1, data={"id": "1", "amount": "2.5"})
    ImportedRow.objects.create(file=imported, line=2, data={"id": "2", "amount": "1.5"})
    summary = build_summary(imported)
    assert summary["rows"] == 2 and summary["columns"] == ["id", "amount"]
    assert summary["totals"] == {"id": "3", "amount": "4.0"}


# --- upload keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "key"),
    [
        ("a.csv", "incoming/a.csv"),
        ("../../etc/x.csv", "incoming/x.csv"),
        ("C:\\d\\y.csv", "incoming/y.csv"),
        ("orders march (draft).csv", "incoming/orders march (draft).csv"),
        ("Q1 ÜBERSICHT.CSV", "incoming/Q1 ÜBERSICHT.csv"),
        ("a$b%c+d\n'e\".csv", "incoming/a_b_c_d__e_.csv"),
        ("x" * 300 + ".csv", "incoming/" + "x" * 200 + ".csv"),
    ],
)
def test_upload_key_is_a_safe_csv_name_under_incoming(filename, key):
    assert upload_key(filename) == key


@pytest.mark.parametrize("filename", ["../", "", " ", ".csv", "...csv", "dir/..", "x.csv/"])
def test_upload_key_rejects_names_without_a_name(filename):
    with pytest.raises(ValueError, match="Choose a file"):
        upload_key(filename)


@pytest.mark.parametrize("filename", ["page.html", "x.csv.html", "report", "x.CSV.exe"])
def test_upload_key_refuses_anything_but_csv(filename):
    with pytest.raises(ValueError, match=r"Only \.csv files"):
        upload_key(filename)


# --- when the demo pages exist -------------------------------------------------------------


@pytest.mark.django_db
def test_demo_pages_are_not_mounted_outside_demo_mode(admin_client):
    assert admin_client.get("/demo/").status_code == 404
    assert admin_client.post("/demo/presign/", {"filename": "a.csv"}).status_code == 404
    assert admin_client.get("/demo/runs/").status_code == 404
    with pytest.raises(NoReverseMatch):
        reverse("demo:upload")
    assert admin_client.get("/")["Location"] == "/admin/"


@pytest.mark.django_db
@pytest.mark.urls(DEMO_URLS)
def test_demo_pages_need_a_staff_login(client, django_user_model):
    for name, method in DEMO_PAGES:
        response = getattr(client, method)(reverse(name))
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
    django_user_model.objects.create_user("visitor", password="pw")
    client.login(username="visitor", password="pw")
    for name, method in DEMO_PAGES:  # logged in, not staff: the admin's login page too
        assert "/admin/login/" in getattr(client, method)(reverse(name))["Location"]


def staff_client(client, django_user_model, *permissions: str):
    user = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    for dotted in permissions:
        app_label, codename = dotted.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client.force_login(user)
    return client


@pytest.mark.django_db
@pytest.mark.urls(DEMO_URLS)
def test_staff_status_alone_opens_no_demo_page(client, django_user_model):
    staff = staff_client(client, django_user_model)
    for name, method in DEMO_PAGES:
        assert getattr(staff, method)(reverse(name)).status_code == 403, name


@pytest.mark.django_db
@pytest.mark.urls(DEMO_URLS)
def test_upload_permission_opens_the_upload_page_but_not_the_runs(client, django_user_model):
    uploader = staff_client(client, django_user_model, "demo.upload_csv")
    page = uploader.get(reverse("demo:upload"))
    assert page.status_code == 200 and b'id="runs-hidden"' in page.content
    assert uploader.post(reverse("demo:presign")).status_code == 400  # no file name: reachable
    assert uploader.get(reverse("demo:runs")).status_code == 403


@pytest.mark.django_db
@pytest.mark.urls(DEMO_URLS)
@pytest.mark.parametrize("permission", ["s3tasks.view_handlerrun", "s3tasks.change_handlerrun"])
def test_handler_run_permission_shows_runs_but_hands_out_no_upload(
    client, django_user_model, permission
):
    viewer = staff_client(client, django_user_model, permission)
    assert viewer.get(reverse("demo:runs")).json() == {"runs": []}
    assert viewer.get(reverse("demo:upload")).status_code == 403
    assert viewer.post(reverse("demo:presign"), {"filename": "a.csv"}).status_code == 403


@pytest.mark.django_db
@pytest.mark.urls(DEMO_URLS)
def test_presign_hands_out_credentials_only_on_post(admin_client):
    assert admin_client.get(reverse("demo:presign"), {"filename": "a.csv"}).status_code == 405


@pytest.mark.django_db
@pytest.mark.urls(DEMO_URLS)
def test_runs_endpoint_lists_recent_runs_of_the_demo_bucket(admin_client, upload):
    size = upload("incoming/a.csv", ORDERS)  # a browser upload (POST) of a two-row CSV
    deliver(
        make_s3_event(DEMO_BUCKET, "incoming/a.csv", event_name="s3:ObjectCreated:Post", size=size)
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
@pytest.mark.urls(DEMO_URLS)
def test_runs_endpoint_says_each_runs_event_and_its_duration_for_the_status_line(admin_client):
    """The upload page tells this upload's runs from an earlier upload of the same key by
    their event, and shows the duration as the admin does."""
    record = EventRecord.objects.create(
        dedup_key="d1", bucket=DEMO_BUCKET, key="incoming/a.csv", event_name="ObjectCreated:Post"
    )
    HandlerRun.objects.create(
        event=record, handler_name="project.demo.handlers.import_csv", duration_ms=1500.0
    )
    [run] = admin_client.get(reverse("demo:runs"), {"key": "incoming/a.csv"}).json()["runs"]
    assert run["event_id"] == record.pk
    assert (run["duration"], run["duration_ms"]) == ("1.5 s", 1500.0)


# --- the presigned POST ---------------------------------------------------------------------


def decoded_policy(fields: dict[str, str]) -> dict:
    return json.loads(base64.b64decode(fields["policy"]))


@pytest.mark.django_db
@pytest.mark.integration
@pytest.mark.urls(DEMO_URLS)
def test_presign_returns_a_post_form_for_one_key_under_incoming(admin_client, moto_endpoint):
    response = admin_client.post(reverse("demo:presign"), {"filename": "../sales.csv"})
    data = json.loads(response.content)
    assert data["key"] == "incoming/sales.csv"
    assert data["url"].startswith(moto_endpoint)
    assert data["fields"]["key"] == "incoming/sales.csv" and "policy" in data["fields"]
    assert data["fields"]["Content-Type"] == "text/csv"
    assert admin_client.post(reverse("demo:presign")).status_code == 400
    refused = admin_client.post(reverse("demo:presign"), {"filename": "index.html"})
    assert refused.status_code == 400 and "Only .csv files" in refused.json()["error"]


@pytest.mark.integration
def test_presigned_policy_pins_key_content_type_and_size(moto_endpoint):
    from s3tasks.aws import client

    post = presigned_upload(client("s3"), "incoming/sales.csv")
    conditions = decoded_policy(post["fields"])["conditions"]
    assert {"key": "incoming/sales.csv"} in conditions  # exact: no "starts-with" on the key
    assert {"bucket": DEMO_BUCKET} in conditions
    assert {"Content-Type": "text/csv"} in conditions
    assert ["content-length-range", 1, MAX_UPLOAD_BYTES] in conditions
    assert not [c for c in conditions if isinstance(c, list) and c[0] == "starts-with"]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("change", "size", "why"),
    [
        ({}, 100, None),
        ({"key": "incoming/page.html"}, 100, "key is 'incoming/page.html'"),
        ({"key": "incoming/sales.csv.html"}, 100, "key is"),
        ({"Content-Type": "text/html"}, 100, "content-type is 'text/html'"),
        ({}, MAX_UPLOAD_BYTES + 1, "outside 1..5242880"),
        ({}, 0, "outside"),
        ({"acl": "public-read"}, 100, "field 'acl' has no condition"),
        ({"success_action_redirect": "https://evil.example"}, 100, "has no condition"),
    ],
)
def test_presigned_policy_refuses_other_keys_types_sizes_and_fields(
    moto_endpoint, change, size, why
):
    """moto accepts any form (it enforces no policy): the policy is checked by S3's rules."""
    from s3tasks.aws import client

    fields = presigned_upload(client("s3"), "incoming/sales.csv")["fields"]
    violations = policy_violations(decoded_policy(fields), DEMO_BUCKET, fields | change, size)
    if why is None:
        assert violations == []
    else:
        assert any(why in v for v in violations), violations


@pytest.mark.integration
def test_moto_stores_a_presigned_upload_with_the_key_and_content_type_of_the_form(moto_endpoint):
    from s3tasks.aws import client

    s3 = client("s3")
    s3.create_bucket(Bucket=DEMO_BUCKET)
    post = presigned_upload(s3, "incoming/sales.csv")
    response = requests.post(
        post["url"],
        data=post["fields"],
        files={"file": ("whatever.bin", b"id,amount\n1,2\n", "application/octet-stream")},
        timeout=30,
    )
    assert response.status_code in (200, 201, 204), response.text
    head = s3.head_object(Bucket=DEMO_BUCKET, Key="incoming/sales.csv")
    assert head["ContentType"] == "text/csv" and head["ContentLength"] == 14


@pytest.mark.django_db
@pytest.mark.urls(DEMO_URLS)
def test_presign_needs_the_csrf_token_the_upload_page_sends(django_user_model):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(django_user_model.objects.create_superuser("root", "r@x.example", "pw"))
    page = browser.get(reverse("demo:upload"))
    # What the page's script sends: the token of the form's hidden csrfmiddlewaretoken input.
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())[1]
    assert browser.post(reverse("demo:presign"), {"filename": "a"}).status_code == 403
    with_token = browser.post(reverse("demo:presign"), {"filename": "a"}, HTTP_X_CSRFTOKEN=token)
    assert with_token.status_code == 400  # past the CSRF check: "a" is not a .csv name
