"""Desired state, entry compilation, configuration merge and plan: pure, no AWS, no database."""

from __future__ import annotations

import copy
import json

import pytest

from s3tasks.exceptions import OverlappingRules, S3TasksConfigurationError
from s3tasks.provisioning.current import CurrentBucket, CurrentQueue, CurrentState
from s3tasks.provisioning.desired import MANAGED_TAG, Account, build_desired, dlq_name
from s3tasks.provisioning.model_rows import BucketRow, ModelRows, QueueRow, RuleRow
from s3tasks.provisioning.notifications import (
    NotificationEntry,
    merge_configuration,
)
from s3tasks.provisioning.ownership import (
    Ledger,
    Origin,
    ResourceKind,
    SeenEntry,
    entry_is_recognised,
    part_identifier,
    rule_ids_of_entry,
)
from s3tasks.provisioning.plan import compute_steps
from s3tasks.provisioning.policies import diff_policy, merge_policy
from s3tasks.provisioning.steps import CreateQueue, PutNotifications
from s3tasks.provisioning.text import render_plan

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
    assert entry.rule_ids == (1, 2)  # the Id is made from these, never parsed back
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
    assert "Policy" not in attributes  # statements are merged by Sid, never the whole policy
    (statement,) = queues["events"].statements
    assert statement["Sid"] == "s3tasks-s3"
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
    owned = {"s3tasks-rule-9"}
    merged = merge_configuration(current, [ours], owned_ids=owned, prune=True, eventbridge=None)
    assert merged["QueueConfigurations"][0] == FOREIGN["QueueConfigurations"][0]
    assert merged["QueueConfigurations"][1]["Id"] == "s3tasks-rule-1"
    assert len(merged["QueueConfigurations"]) == 2
    assert merged["LambdaFunctionConfigurations"] == FOREIGN["LambdaFunctionConfigurations"]
    assert merged["EventBridgeConfiguration"] == {}
    kept = merge_configuration(current, [ours], owned_ids=owned, prune=False, eventbridge=False)
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


def _in_sync_queues(desired) -> list[CurrentQueue]:
    """The desired queues as sync would have made them (tagged, our statements in place)."""
    return [
        CurrentQueue(
            q.name,
            f"https://q/{q.name}",
            {**q.attributes, "Policy": merge_policy(None, q.statements)},
            tagged=True,
        )
        for q in desired.queues
    ]


def _ledger(desired, *entry_ids: str) -> Ledger:
    """Records saying the desired queues (and statements) and these entries are ours."""
    bucket = ACCOUNT.bucket_arn("uploads")
    keys = [(ResourceKind.NOTIFICATION, part_identifier(bucket, i)) for i in entry_ids]
    for q in desired.queues:
        keys.append((ResourceKind.QUEUE, q.arn))
        keys += [
            (ResourceKind.POLICY_STATEMENT, part_identifier(q.arn, s["Sid"])) for s in q.statements
        ]
    return Ledger(dict.fromkeys(keys, Origin.CREATED))


def test_plan_creates_destinations_before_writing_the_bucket_configuration():
    plan = compute_steps(desired_for(rule(1, "in/")), _current())
    assert [s.action for s in plan.steps] == ["create_queue", "create_queue", "put_notifications"]
    assert plan.has_changes
    assert json.loads(json.dumps(plan.to_dict()))["steps"][2]["resource"] == "uploads"


def test_each_step_carries_the_typed_change_apply_makes():
    desired = desired_for(rule(1, "in/"))
    plan = compute_steps(desired, _current())
    dlq, events, notifications = (s.change for s in plan.steps)
    assert dlq == CreateQueue("events-dlq", desired.queues[0].attributes, {MANAGED_TAG: "true"})
    assert isinstance(events, CreateQueue) and "Policy" in events.attributes
    assert notifications == PutNotifications(
        "uploads", desired.buckets[0].notifications, owned_ids=(), prune=False, eventbridge=None
    )


def test_json_plan_gives_each_change_as_params_and_notes_none():
    desired = desired_for(rule(1, "in/"))
    stale = {"Id": "s3tasks-rule-7", "QueueArn": QUEUE_ARN, "Events": ["s3:ObjectRemoved:*"]}
    current = _current({"QueueConfigurations": [stale]}, _in_sync_queues(desired))
    plan = compute_steps(desired, current, ledger=_ledger(desired, "s3tasks-rule-7"))
    step, note = json.loads(json.dumps(plan.to_dict(), default=str))["steps"]
    assert list(step) == [
        "action",
        "resource_type",
        "resource",
        "message",
        "params",
        "pending",
        "ownership",
        "claims",
        "releases",
    ]
    assert step["action"] == "put_notifications"
    assert step["params"]["owned_ids"] == ["s3tasks-rule-7"]
    assert [e["id"] for e in step["params"]["entries"]] == ["s3tasks-rule-1"]
    assert step["claims"] == [
        {
            "kind": "notification",
            "identifier": "arn:aws:s3:::uploads#s3tasks-rule-1",
            "origin": "created",
        }
    ]
    assert (note["action"], note["pending"], note["params"]) == ("keep_stale", False, {})


def test_plan_reports_stale_owned_entries_without_prune_and_removes_them_with_it():
    desired = desired_for(rule(1, "in/"))
    entry = desired.buckets[0].notifications[0].to_s3()
    stale = {"Id": "s3tasks-rule-7", "QueueArn": QUEUE_ARN, "Events": ["s3:ObjectRemoved:*"]}
    current = _current({"QueueConfigurations": [entry, stale]}, _in_sync_queues(desired))
    ledger = _ledger(desired, "s3tasks-rule-1", "s3tasks-rule-7")
    plan = compute_steps(desired, current, ledger=ledger)
    assert not plan.has_changes
    assert [s.message for s in plan.notes] == [
        "would remove stale entry s3tasks-rule-7 from bucket uploads (use --prune)"
    ]
    pruned = compute_steps(desired, current, ledger=ledger, prune=True)
    assert [s.action for s in pruned.changes] == ["put_notifications"]
    assert "remove stale entry s3tasks-rule-7" in pruned.changes[0].message
    assert [c.identifier for c in pruned.changes[0].releases] == [
        "arn:aws:s3:::uploads#s3tasks-rule-7"
    ]


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


# --- ownership: policies merged by Sid, what counts as ours, and how the plan shows it -----

THEIRS = {"Sid": "Theirs", "Effect": "Allow", "Principal": "*", "Action": "sqs:SendMessage"}


def _policy(*statements) -> str:
    return json.dumps({"Version": "2012-10-17", "Id": "their-id", "Statement": list(statements)})


def test_merge_policy_writes_only_our_sids_and_copies_every_other_statement_as_read():
    old_ours = {"Sid": "s3tasks-s3", "Effect": "Allow", "Action": "old"}
    gone = {"Sid": "s3tasks-sns", "Effect": "Allow", "Action": "old"}
    new_ours = {"Sid": "s3tasks-s3", "Effect": "Allow", "Action": "new"}
    merged = json.loads(merge_policy(_policy(THEIRS, old_ours, gone), [new_ours], ["s3tasks-sns"]))
    assert merged["Statement"] == [THEIRS, new_ours]
    assert merged["Id"] == "their-id"
    assert merge_policy(_policy(gone), [], ["s3tasks-sns"]) == ""  # SQS: no policy left


def test_diff_policy_tells_added_replaced_removed_taken_over_and_kept_statements():
    ours = [{"Sid": "s3tasks-s3", "Action": "new"}, {"Sid": "s3tasks-sns", "Action": "x"}]
    current = _policy(THEIRS, {"Sid": "s3tasks-s3", "Action": "old"}, {"Sid": "s3tasks-old"})
    diff = diff_policy(current, ours, owned_sids={"s3tasks-s3", "s3tasks-old"})
    assert (diff.added, diff.replaced, diff.removed) == (
        ("s3tasks-sns",),
        ("s3tasks-s3",),
        ("s3tasks-old",),
    )
    assert diff.kept == ("Theirs",) and diff.taken_over == ()
    unrecorded = diff_policy(current, ours, owned_sids=set())
    assert unrecorded.taken_over == ("s3tasks-s3",) and unrecorded.removed == ()
    assert unrecorded.kept == ("Theirs", "s3tasks-old")


def test_entry_ids_name_their_rules_and_other_ids_name_none():
    assert rule_ids_of_entry("s3tasks-rule-7") == {7}
    assert rule_ids_of_entry("s3tasks-rules-3-5") == {3, 5}
    assert rule_ids_of_entry("s3tasks-audit") == frozenset()
    assert rule_ids_of_entry("s3tasks-rules-" + "a" * 20) == frozenset()


def test_unrecorded_entries_are_recognised_only_on_a_bucket_without_recorded_entries():
    bucket = ACCOUNT.bucket_arn("uploads")
    ours, theirs = ACCOUNT.sqs_arn("events"), ACCOUNT.sqs_arn("theirs")

    def seen(entry_id: str, destination: str = theirs, name: str = "uploads") -> SeenEntry:
        return SeenEntry(name, ACCOUNT.bucket_arn(name), entry_id, destination)

    fresh = Ledger({}, {"uploads": frozenset({3, 5})})
    assert entry_is_recognised(seen("s3tasks-rules-3-5"), fresh, [], [])
    assert entry_is_recognised(seen("s3tasks-rules-hash"), fresh, ["s3tasks-rules-hash"], [])
    assert not entry_is_recognised(seen("s3tasks-rule-4"), fresh, [], [])
    assert not entry_is_recognised(seen("s3tasks-rule-3", name="logs"), fresh, [], [])
    # a rule deleted before the upgrade: its entry still sends to a queue 0.1 tagged
    assert entry_is_recognised(seen("s3tasks-rule-4", ours), fresh, [], [ours])
    assert not entry_is_recognised(seen("s3tasks-audit", ours), fresh, [], [ours])
    synced = Ledger(
        {(ResourceKind.NOTIFICATION, part_identifier(bucket, "s3tasks-rule-5")): Origin.CREATED},
        {"uploads": frozenset({3, 5})},
    )
    assert not entry_is_recognised(seen("s3tasks-rule-3", ours), synced, ["s3tasks-rule-3"], [ours])


def _foreign_events_queue(tagged=False):
    attributes = {"VisibilityTimeout": "123", "Policy": _policy(THEIRS)}
    return CurrentQueue("events", "https://q/events", attributes, tagged=tagged)


def test_an_existing_queue_nobody_recorded_blocks_the_plan_until_adopted():
    desired = desired_for(rule(1))
    current = _current(queues=[_foreign_events_queue()])
    plan = compute_steps(desired, current)
    assert plan.blocked and [s.resource for s in plan.foreign] == ["events"]
    assert plan.foreign[0].ownership == "foreign" and not plan.foreign[0].pending
    adopted = compute_steps(desired, current, adopt=True)
    assert not adopted.blocked
    (step,) = [s for s in adopted.changes if s.resource == "events"]
    assert (step.action, step.ownership) == ("adopt_queue", "adopted")
    assert step.change.attributes == {}  # no Queue row: no defaults forced on it
    assert [(c.kind, c.origin) for c in step.claims] == [
        ("queue", "adopted"),
        ("policy_statement", "created"),
    ]
    assert "events-dlq" not in [s.resource for s in adopted.steps]


def test_a_tagged_queue_without_records_is_recorded_as_ours_and_managed():
    desired = desired_for(rule(1))
    current = _current(queues=[_foreign_events_queue(tagged=True)])
    plan = compute_steps(desired, current)
    assert not plan.blocked
    (step,) = [s for s in plan.changes if s.resource == "events"]
    assert step.action == "update_queue" and step.ownership == "ours"
    assert "VisibilityTimeout" in step.change.attributes  # ours: defaults apply
    assert [(c.kind, c.origin) for c in step.claims] == [
        ("queue", "recognised"),
        ("policy_statement", "created"),
    ]


def test_text_plan_marks_ours_adopted_and_foreign_steps():
    desired = desired_for(rule(1))
    current = _current(queues=[_foreign_events_queue()])
    blocked = render_plan(compute_steps(desired, current))
    assert "  ✗ [foreign] SQS queue events exists but s3tasks did not create it" in blocked
    assert "  + [ours]    create SQS queue events-dlq" not in blocked  # not needed: adopted
    assert "Run again with --adopt" in blocked
    adopted = render_plan(compute_steps(desired, current, adopt=True))
    assert "  ~ [adopted] adopt SQS queue events: policy statements: add s3tasks-s3" in adopted
    assert "(kept as read: Theirs)" in adopted


def test_ownership_values_are_the_model_choices():
    from s3tasks.models import ManagedResource

    assert {k.value for k in ResourceKind} == set(ManagedResource.Kind.values)
    assert {o.value for o in Origin} == set(ManagedResource.Origin.values)
