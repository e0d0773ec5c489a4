"""Desired state, entry compilation, configuration merge and plan: pure, no AWS, no database."""

from __future__ import annotations

import copy
import json

import pytest

from s3tasks.exceptions import OverlappingRules, S3TasksConfigurationError
from s3tasks.provisioning.current import CurrentBucket, CurrentQueue, CurrentState
from s3tasks.provisioning.desired import Account, build_desired, dlq_name
from s3tasks.provisioning.model_rows import BucketRow, ModelRows, QueueRow, RuleRow
from s3tasks.provisioning.notifications import (
    NotificationEntry,
    merge_configuration,
)
from s3tasks.provisioning.plan import compute_steps

ACCOUNT = Account(id="111122223333", region="eu-west-1")
QUEUE_ARN = ACCOUNT.sqs_arn("events")

FOREIGN = {
    "QueueConfigurations": [
        {
            "Id": "someone-else",
            "QueueArn": "arn:aws:sqs:eu-west-1:111122223333:theirs",
            "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "Prefix", "Value": "other/"}]}},
        }
    ],
    "LambdaFunctionConfigurations": [
        {
            "Id": "thumbnails",
            "LambdaFunctionArn": "arn:aws:lambda:eu-west-1:111122223333:function:thumbs",
            "Events": ["s3:ObjectRemoved:*"],
        }
    ],
    "EventBridgeConfiguration": {},
}


def rule(rule_id: int, prefix: str = "", suffix: str = "", **kwargs) -> RuleRow:
    values = {"events": ("s3:ObjectCreated:*",), "bucket": "uploads"} | kwargs
    return RuleRow(id=rule_id, label=f"rule {rule_id}", prefix=prefix, suffix=suffix, **values)


def desired_for(*rules: RuleRow, **bucket):
    rows = ModelRows(buckets=(BucketRow("uploads", **bucket),), rules=rules)
    return build_desired(rows, default_queue="events", account=ACCOUNT)


def entries(*rules: RuleRow):
    return desired_for(*rules).buckets[0].notifications


def test_overlapping_bindings_to_one_destination_merge_into_one_wider_entry():
    (entry,) = entries(rule(1, "images/2024/", ".jpg"), rule(2, "images/", "pg"))
    assert (entry.id, entry.prefix, entry.suffix) == ("s3tasks-rules-1-2", "images/", "pg")
    assert entry.arn == QUEUE_ARN


def test_bindings_on_distinct_prefixes_stay_distinct_entries():
    compiled = entries(rule(1, "a/"), rule(2, "b/"))
    assert [(e.id, e.prefix) for e in compiled] == [
        ("s3tasks-rule-1", "a/"),
        ("s3tasks-rule-2", "b/"),
    ]


def test_a_widened_entry_that_newly_overlaps_another_is_merged_again():
    compiled = entries(rule(1, "a/", ".jpg"), rule(2, "a/b/", "g"), rule(3, "a/c/", "ng"))
    assert [(e.prefix, e.suffix) for e in compiled] == [("a/", "g")]


def test_same_filter_different_events_becomes_one_entry_with_both_events():
    (entry,) = entries(rule(1, "in/"), rule(2, "in/", events=("s3:ObjectRemoved:Delete",)))
    assert entry.events == ("s3:ObjectCreated:*", "s3:ObjectRemoved:Delete")


def test_wildcard_absorbs_specific_events_of_its_family():
    (entry,) = entries(rule(1, events=("s3:ObjectCreated:Put",)), rule(2))
    assert entry.events == ("s3:ObjectCreated:*",)


def test_overlap_to_different_destinations_fails_naming_both_rules():
    with pytest.raises(OverlappingRules) as caught:
        entries(rule(1, "in/"), rule(2, "in/x", queue="other"))
    assert "rule 1" in str(caught.value) and "rule 2" in str(caught.value)


def test_fifo_destination_is_a_clear_error():
    with pytest.raises(S3TasksConfigurationError, match="FIFO queue"):
        entries(rule(1, queue="jobs.fifo"))


def test_queues_get_a_dead_letter_queue_redrive_policy_and_a_restricted_policy():
    desired = desired_for(rule(1))
    queues = {q.name: q for q in desired.queues}
    assert list(queues) == ["events-dlq", "events"]  # the DLQ is created first
    attributes = queues["events"].attributes
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": ACCOUNT.sqs_arn("events-dlq"),
        "maxReceiveCount": 5,
    }
    assert int(attributes["MaximumMessageSize"]) >= 65536
    (statement,) = json.loads(attributes["Policy"])["Statement"]
    assert statement["Condition"] == {
        "ArnLike": {"aws:SourceArn": ["arn:aws:s3:::uploads"]},
        "StringEquals": {"aws:SourceAccount": "111122223333"},
    }


def test_dlq_names_keep_fifo_suffix_and_length_limit():
    assert dlq_name("jobs.fifo") == "jobs-dlq.fifo"
    assert len(dlq_name("q" * 80)) == 80


def test_merge_keeps_foreign_entries_byte_for_byte_and_replaces_ours():
    current = copy.deepcopy(FOREIGN)
    current["QueueConfigurations"].append(
        {"Id": "s3tasks-rule-9", "QueueArn": QUEUE_ARN, "Events": ["s3:ObjectCreated:*"]}
    )
    ours = NotificationEntry("s3tasks-rule-1", "queue", QUEUE_ARN, ("s3:ObjectCreated:*",), "in/")
    merged = merge_configuration(current, [ours], prune=True, eventbridge=None)
    assert merged["QueueConfigurations"][0] == FOREIGN["QueueConfigurations"][0]
    assert merged["QueueConfigurations"][1]["Id"] == "s3tasks-rule-1"
    assert len(merged["QueueConfigurations"]) == 2
    assert merged["LambdaFunctionConfigurations"] == FOREIGN["LambdaFunctionConfigurations"]
    assert merged["EventBridgeConfiguration"] == {}
    kept = merge_configuration(current, [ours], prune=False, eventbridge=False)
    assert [e["Id"] for e in kept["QueueConfigurations"]] == [
        "someone-else",
        "s3tasks-rule-9",
        "s3tasks-rule-1",
    ]
    assert "EventBridgeConfiguration" not in kept


def _current(notification=None, queues=()):
    return CurrentState(
        buckets={"uploads": CurrentBucket("uploads", True, notification or {})},
        queues={q.name: q for q in queues},
    )


def test_plan_creates_destinations_before_writing_the_bucket_configuration():
    plan = compute_steps(desired_for(rule(1, "in/")), _current())
    assert [s.action for s in plan.steps] == ["create_queue", "create_queue", "put_notifications"]
    assert plan.has_changes
    assert json.loads(json.dumps(plan.to_dict()))["steps"][2]["resource"] == "uploads"


def test_plan_reports_stale_owned_entries_without_prune_and_removes_them_with_it():
    desired = desired_for(rule(1, "in/"))
    entry = desired.buckets[0].notifications[0].to_s3()
    stale = {"Id": "s3tasks-rule-7", "QueueArn": QUEUE_ARN, "Events": ["s3:ObjectRemoved:*"]}
    queues = [
        CurrentQueue(q.name, f"https://q/{q.name}", dict(q.attributes)) for q in desired.queues
    ]
    current = _current({"QueueConfigurations": [entry, stale]}, queues)
    plan = compute_steps(desired, current)
    assert not plan.has_changes
    assert [s.message for s in plan.notes] == [
        "would remove stale entry s3tasks-rule-7 from bucket uploads (use --prune)"
    ]
    pruned = compute_steps(desired, current, prune=True)
    assert [s.action for s in pruned.changes] == ["put_notifications"]
    assert "remove stale entry s3tasks-rule-7" in pruned.changes[0].message


def test_plan_refuses_a_configuration_that_clashes_with_a_foreign_entry():
    foreign = copy.deepcopy(FOREIGN)
    with pytest.raises(OverlappingRules, match="entry made outside s3tasks 'someone-else'"):
        compute_steps(desired_for(rule(1, "other/x")), _current(foreign))


def test_eventbridge_is_only_touched_when_the_model_says_so():
    untouched = compute_steps(desired_for(), _current(copy.deepcopy(FOREIGN)))
    assert not [s for s in untouched.changes if s.action == "put_notifications"]
    switched = compute_steps(desired_for(eventbridge_enabled=False), _current(FOREIGN))
    assert "turn EventBridge delivery off" in switched.changes[-1].message


def test_missing_bucket_not_marked_for_creation_is_an_error():
    from s3tasks.exceptions import ProvisioningError

    current = CurrentState(buckets={"uploads": CurrentBucket("uploads", False)})
    with pytest.raises(ProvisioningError, match="create_if_missing"):
        compute_steps(desired_for(create_if_missing=False), current)


def test_limiting_to_one_bucket_keeps_only_its_destinations():
    rows = ModelRows(
        buckets=(BucketRow("uploads"), BucketRow("logs")),
        queues=(QueueRow("audit"),),
        rules=(rule(1), rule(2, bucket="logs", queue="audit")),
    )
    desired = build_desired(rows, default_queue="events", account=ACCOUNT, buckets=["logs"])
    assert [b.name for b in desired.buckets] == ["logs"]
    assert [q.name for q in desired.queues] == ["audit-dlq", "audit"]
