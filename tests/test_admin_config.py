"""Admin pages for configuration: buckets, topics, queues, rules with handler bindings, the
enable/disable actions and the "Which handlers would run?" tool, including permissions."""

from __future__ import annotations

import re
from functools import partial

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from s3tasks.models import Bucket, HandlerBinding, NotificationRule, Queue, RulesVersion, Topic
from s3tasks.models.config import SyncStatus
from s3tasks.rules.code_bindings import sync_code_bindings
from s3tasks.rules.filters import S3_EVENT_TYPES
from tests.admin_support import login_staff

IMPORT_CSV = "project.demo.handlers.import_csv"
FORGET_CSV = "project.demo.handlers.forget_csv"
DEMO_BUCKET = "s3tasks-demo-uploads"

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, django_user_model):
    """A logged-in staff user holding exactly the given `app.codename` permissions."""
    return partial(login_staff, client, django_user_model)


@pytest.fixture
def code_rules():
    sync_code_bindings()
    return NotificationRule.objects.filter(declared_in_code=True, bucket__name=DEMO_BUCKET)


def admin_rule(**extra) -> NotificationRule:
    bucket, _ = Bucket.objects.get_or_create(name="photos")
    rule = NotificationRule.objects.create(
        name="thumbnails", bucket=bucket, events=["s3:ObjectCreated:*"], prefix="raw/", **extra
    )
    HandlerBinding.objects.create(rule=rule, handler_name=IMPORT_CSV)
    return rule


@pytest.mark.parametrize("model", ["bucket", "topic", "queue", "notificationrule"])
def test_config_changelist_and_add_pages_render(admin_client, model):
    admin_rule()
    Topic.objects.create(name="fanout")
    Queue.objects.create(name="work")
    assert admin_client.get(reverse(f"admin:s3tasks_{model}_changelist")).status_code == 200
    assert admin_client.get(reverse(f"admin:s3tasks_{model}_add")).status_code == 200


def test_bucket_list_shows_sync_status_and_last_error(admin_client):
    Bucket.objects.create(
        name="broken-bucket",
        last_sync_status=SyncStatus.FAILED,
        last_sync_error="AccessDenied: not allowed to PutBucketNotificationConfiguration",
    )
    page = admin_client.get(reverse("admin:s3tasks_bucket_changelist")).content.decode()
    assert "broken-bucket" in page
    assert "Failed" in page
    assert "AccessDenied: not allowed to PutBucketNotificationConfiguration" in page


def test_queue_change_form_shows_dead_letter_queue_and_subscriptions_inline(admin_client):
    dlq = Queue.objects.create(name="work-dlq")
    queue = Queue.objects.create(name="work", dead_letter_queue=dlq)
    page = admin_client.get(reverse("admin:s3tasks_queue_change", args=[queue.pk])).content
    assert b'name="dead_letter_queue"' in page
    assert b"subscriptions-TOTAL_FORMS" in page


def test_rule_form_offers_registered_handlers_as_a_dropdown(admin_client):
    page = admin_client.get(reverse("admin:s3tasks_notificationrule_add")).content.decode()
    assert '<select name="bindings-0-handler_name"' in page
    assert f'<option value="{IMPORT_CSV}">' in page
    assert f'<option value="{FORGET_CSV}">' in page


def rule_post(bucket: Bucket, handler: str, **fields) -> dict:
    data = {
        "name": "from the admin",
        "bucket": bucket.pk,
        "events": ["s3:ObjectCreated:*"],
        "prefix": "uploads/",
        "suffix": "",
        "enabled": "on",
        "bindings-TOTAL_FORMS": "1",
        "bindings-INITIAL_FORMS": "0",
        "bindings-MIN_NUM_FORMS": "0",
        "bindings-MAX_NUM_FORMS": "1000",
        "bindings-0-handler_name": handler,
        "bindings-0-access": "read",
        "bindings-0-enabled": "on",
    }
    data.update(fields)
    return data


def test_adding_a_rule_with_a_binding_creates_both_and_bumps_the_rules_version(
    admin_client, django_capture_on_commit_callbacks
):
    bucket = Bucket.objects.create(name="photos")
    before = RulesVersion.current()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:s3tasks_notificationrule_add"), rule_post(bucket, IMPORT_CSV)
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    rule = NotificationRule.objects.get(name="from the admin")
    assert list(rule.bindings.values_list("handler_name", flat=True)) == [IMPORT_CSV]
    assert rule.declared_in_code is False
    assert RulesVersion.current() > before


def test_binding_to_an_unregistered_handler_is_rejected(admin_client):
    bucket = Bucket.objects.create(name="photos")
    response = admin_client.post(
        reverse("admin:s3tasks_notificationrule_add"), rule_post(bucket, "nobody.wrote.this")
    )
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not NotificationRule.objects.filter(name="from the admin").exists()


def test_code_declared_rule_is_read_only_and_shows_where_it_is_declared(admin_client, code_rules):
    rule = code_rules.get(bindings__handler_name=IMPORT_CSV)
    url = reverse("admin:s3tasks_notificationrule_change", args=[rule.pk])
    page = admin_client.get(url).content.decode()
    assert "in code: project.demo.handlers:" in page
    assert 'name="prefix"' not in page  # read-only
    assert "bindings-0-handler_name" not in page  # the binding is shown, not editable
    assert IMPORT_CSV in page
    assert reverse("admin:s3tasks_notificationrule_delete", args=[rule.pk]) not in page
    binding = rule.bindings.get()
    response = admin_client.post(
        url,
        {
            "prefix": "elsewhere/",
            "bindings-0-id": binding.pk,
            "bindings-0-rule": rule.pk,
            **_inline_management(),
        },
    )
    assert response.status_code == 302
    rule.refresh_from_db()
    assert rule.prefix == "incoming/"  # read-only fields ignore posted values
    assert rule.enabled is False  # on/off stays the admin's to decide


def _inline_management() -> dict:
    return {
        "bindings-TOTAL_FORMS": "1",
        "bindings-INITIAL_FORMS": "1",
        "bindings-MIN_NUM_FORMS": "0",
        "bindings-MAX_NUM_FORMS": "0",
    }


def test_code_declared_rule_cannot_be_deleted(admin_client, code_rules):
    rule = code_rules.first()
    response = admin_client.get(reverse("admin:s3tasks_notificationrule_delete", args=[rule.pk]))
    assert response.status_code == 403


def test_rule_list_shows_origin_handlers_and_destination(admin_client, code_rules):
    admin_rule()
    page = admin_client.get(reverse("admin:s3tasks_notificationrule_changelist")).content.decode()
    assert "in the admin" in page
    assert "in code: project.demo.handlers:" in page
    assert "SQS s3tasks-events" in page
    assert "Which handlers would run?" in page


def run_action(client, action: str, rules) -> object:
    return client.post(
        reverse("admin:s3tasks_notificationrule_changelist"),
        {"action": action, "_selected_action": [r.pk for r in rules]},
        follow=True,
    )


def test_disable_and_enable_actions_update_rules_and_bump_the_version(
    admin_client, django_capture_on_commit_callbacks
):
    rule = admin_rule()
    before = RulesVersion.current()
    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(admin_client, "disable_rules", [rule])
    assert "Disabled 1 rule." in response.content.decode()
    rule.refresh_from_db()
    assert rule.enabled is False
    assert RulesVersion.current() > before
    with django_capture_on_commit_callbacks(execute=True):
        run_action(admin_client, "enable_rules", [rule])
    rule.refresh_from_db()
    assert rule.enabled is True


def test_toggle_messages_count_two_rules_in_the_plural(admin_client):
    first = admin_rule()
    second = NotificationRule.objects.create(
        name="previews", bucket=first.bucket, events=["s3:ObjectCreated:*"], prefix="small/"
    )
    html = run_action(admin_client, "disable_rules", [first, second]).content.decode()
    assert "Disabled 2 rules." in html
    html = run_action(admin_client, "enable_rules", [first, second]).content.decode()
    assert "Enabled 2 rules." in html
    assert "Enabled 1 rule." in run_action(admin_client, "enable_rules", [first]).content.decode()


def test_view_only_staff_cannot_toggle_rules_or_add_them(staff_client):
    rule = admin_rule()
    client = staff_client("s3tasks.view_notificationrule")
    page = client.get(reverse("admin:s3tasks_notificationrule_changelist")).content.decode()
    assert "disable_rules" not in page
    run_action(client, "disable_rules", [rule])
    rule.refresh_from_db()
    assert rule.enabled is True
    assert client.get(reverse("admin:s3tasks_notificationrule_add")).status_code == 403


def test_staff_without_permissions_gets_403_on_config_pages(staff_client):
    client = staff_client()
    for model in ("bucket", "topic", "queue", "notificationrule"):
        assert client.get(reverse(f"admin:s3tasks_{model}_changelist")).status_code == 403
    assert client.get(reverse("admin:s3tasks_which_handlers")).status_code == 403


def test_which_handlers_lists_matching_handlers_and_why_other_rules_did_not_match(
    admin_client, code_rules
):
    response = admin_client.get(
        reverse("admin:s3tasks_which_handlers"),
        {"bucket": DEMO_BUCKET, "key": "incoming/a b.csv", "event_name": "ObjectCreated:Put"},
    )
    page = response.content.decode()
    assert "1 handler would run for s3:ObjectCreated:Put" in page
    routed = page.split('id="routed-handlers"')[1].split("</ul>")[0]
    assert IMPORT_CSV in routed and FORGET_CSV not in routed
    assert "event ObjectCreated:Put is not one of ObjectRemoved:*" in page


def test_which_handlers_counts_two_handlers_in_the_plural(admin_client):
    rule = admin_rule()
    HandlerBinding.objects.create(rule=rule, handler_name=FORGET_CSV)
    response = admin_client.get(
        reverse("admin:s3tasks_which_handlers"),
        {"bucket": "photos", "key": "raw/cat.png", "event_name": "ObjectCreated:Put"},
    )
    assert "2 handlers would run for s3:ObjectCreated:Put on s3://photos/raw/cat.png" in (
        response.content.decode()
    )


def test_which_handlers_explains_prefix_suffix_and_disabled_rules(admin_client):
    rule = admin_rule(enabled=False)
    response = admin_client.get(
        reverse("admin:s3tasks_which_handlers"),
        {"bucket": "photos", "key": "other/cat.png", "event_name": "ObjectCreated:Put"},
    )
    page = response.content.decode()
    assert "No handler would run" in page
    assert "key does not start with &#x27;raw/&#x27;" in page
    assert "the rule is disabled" in page
    assert reverse("admin:s3tasks_notificationrule_change", args=[rule.pk]) in page


def test_which_handlers_form_rejects_unknown_event_names(admin_client):
    response = admin_client.get(
        reverse("admin:s3tasks_which_handlers"),
        {"bucket": "photos", "key": "x", "event_name": "ObjectCreated:*"},
    )
    assert "Select a valid choice" in response.content.decode()


# --- the rule's events as checkboxes; a rule's link to its runs ------------------------------


def test_rule_form_offers_every_s3_event_type_as_a_checkbox_not_a_json_textarea(admin_client):
    page = admin_client.get(reverse("admin:s3tasks_notificationrule_add")).content.decode()
    assert '<textarea name="events"' not in page
    for name in S3_EVENT_TYPES:
        assert f'type="checkbox" name="events" value="s3:{name}"' in page, name
    assert "<label>ObjectCreated</label>" in page  # grouped by family


def test_rule_change_form_checks_the_stored_events_in_either_spelling(admin_client):
    rule = admin_rule()
    NotificationRule.objects.filter(pk=rule.pk).update(
        events=["ObjectCreated:*", "s3:ObjectRemoved:Delete"]
    )
    url = reverse("admin:s3tasks_notificationrule_change", args=[rule.pk])
    page = admin_client.get(url).content.decode()
    checked = re.findall(r'name="events" value="([^"]+)"[^>]*checked', page)
    assert checked == ["s3:ObjectCreated:*", "s3:ObjectRemoved:Delete"]


def test_checked_events_are_saved_as_a_list_of_s3_names(admin_client):
    bucket = Bucket.objects.create(name="photos")
    events = ["s3:ObjectCreated:Put", "s3:ObjectRemoved:*"]
    response = admin_client.post(
        reverse("admin:s3tasks_notificationrule_add"),
        rule_post(bucket, IMPORT_CSV, events=events),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert NotificationRule.objects.get(name="from the admin").events == events


@pytest.mark.parametrize(
    ("events", "error"),
    [
        ([], "Choose at least one S3 event"),
        (["s3:ObjectCreated:Upload"], "Select a valid choice"),
        ('["s3:ObjectCreated:*"]', "Select a valid choice"),  # the old JSON text
    ],
)
def test_a_rule_needs_checked_s3_event_names(admin_client, events, error):
    bucket = Bucket.objects.create(name="photos")
    response = admin_client.post(
        reverse("admin:s3tasks_notificationrule_add"),
        rule_post(bucket, IMPORT_CSV, events=events),
    )
    assert response.status_code == 200 and error in response.content.decode()
    assert not NotificationRule.objects.filter(name="from the admin").exists()


def test_resaving_a_rule_with_the_same_events_in_the_short_spelling_changes_nothing(
    admin_client,
):
    rule = admin_rule()
    NotificationRule.objects.filter(pk=rule.pk).update(events=["ObjectCreated:*"])
    url = reverse("admin:s3tasks_notificationrule_change", args=[rule.pk])
    binding = rule.bindings.get()
    data = rule_post(
        rule.bucket,
        IMPORT_CSV,
        name="thumbnails",
        prefix="raw/",
        events=["s3:ObjectCreated:*"],
        **{"bindings-0-id": binding.pk, "bindings-0-rule": rule.pk},
    )
    data["bindings-INITIAL_FORMS"] = "1"
    assert admin_client.post(url, data).status_code == 302
    assert LogEntry.objects.latest("pk").get_change_message() == "No fields changed."


def test_a_rule_links_to_its_runs_from_its_page_and_the_list(admin_client):
    rule = admin_rule()
    runs = reverse("admin:s3tasks_handlerrun_changelist") + f"?rule={rule.pk}"
    change = reverse("admin:s3tasks_notificationrule_change", args=[rule.pk])
    assert f'href="{runs}"' in admin_client.get(change).content.decode()
    listing = reverse("admin:s3tasks_notificationrule_changelist")
    assert f'href="{runs}"' in admin_client.get(listing).content.decode()


def test_a_rule_declared_in_code_links_to_its_runs_too(admin_client, code_rules):
    rule = code_rules.first()
    page = admin_client.get(reverse("admin:s3tasks_notificationrule_change", args=[rule.pk]))
    assert f"?rule={rule.pk}" in page.content.decode()
