from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from s3tasks.models import Bucket, HandlerBinding, NotificationRule, Queue, Topic

pytestmark = pytest.mark.django_db


@pytest.fixture
def bucket():
    return Bucket.objects.create(name="uploads")


def test_fifo_queue_is_rejected_as_an_s3_destination(bucket):
    fifo = Queue.objects.create(name="jobs.fifo")
    rule = NotificationRule(bucket=bucket, events=["s3:ObjectCreated:*"], queue=fifo)
    with pytest.raises(ValidationError, match="FIFO"):
        rule.full_clean()


def test_rule_event_patterns_must_be_s3_event_names(bucket):
    rule = NotificationRule(bucket=bucket, events=["ObjectUploaded"])
    with pytest.raises(ValidationError) as error:
        rule.full_clean()
    assert "not an S3 event type" in str(error.value.message_dict["events"])


def test_rule_needs_at_least_one_event_pattern(bucket):
    rule = NotificationRule(bucket=bucket, events=[])
    with pytest.raises(ValidationError, match="at least one"):
        rule.full_clean()


def test_rule_cannot_target_a_topic_and_a_queue_at_once(bucket):
    rule = NotificationRule(
        bucket=bucket,
        events=["s3:ObjectCreated:*"],
        topic=Topic.objects.create(name="t"),
        queue=Queue.objects.create(name="q"),
    )
    with pytest.raises(ValidationError, match="not both"):
        rule.full_clean()


def test_valid_rule_passes_validation(bucket):
    rule = NotificationRule(
        bucket=bucket, events=["s3:ObjectCreated:*", "ObjectRemoved:Delete"], prefix="in/"
    )
    rule.full_clean()
    assert rule.normalized_events == ("ObjectCreated:*", "ObjectRemoved:Delete")


def test_queue_dead_letter_queue_must_match_fifo_kind():
    dlq = Queue.objects.create(name="dead.fifo")
    queue = Queue(name="work", dead_letter_queue=dlq)
    with pytest.raises(ValidationError, match="FIFO"):
        queue.full_clean()


def test_queue_visibility_timeout_is_limited_to_sqs_maximum():
    with pytest.raises(ValidationError, match="43200"):
        Queue(name="work", visibility_timeout=50000).full_clean()


def test_a_binding_may_name_a_handler_of_another_release_but_the_admin_form_offers_only_known_ones(
    bucket,
):
    from s3tasks.admin.forms import HandlerBindingForm

    rule = NotificationRule.objects.create(bucket=bucket, events=["s3:ObjectCreated:*"])
    HandlerBinding(rule=rule, handler_name="newer.release.handler").full_clean()  # W004 warns
    form = HandlerBindingForm(data={"handler_name": "nowhere.handler", "access": "read"})
    assert not form.is_valid() and "handler_name" in form.errors


def test_bucket_cors_rules_must_be_a_list():
    with pytest.raises(ValidationError, match="JSON list"):
        Bucket(name="b", cors_rules={"AllowedMethods": ["PUT"]}).full_clean()
