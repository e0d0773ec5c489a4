"""Plan steps for queues and topics (pure), each decided by ownership first.

Created or recorded ones get every attribute sync manages; adopted ones only what a row sets
explicitly plus our policy statements; foreign ones nothing (a blocking step says how to
proceed). Policies are always merged statement by statement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from s3tasks.provisioning.current import CurrentQueue, CurrentState, CurrentTopic
from s3tasks.provisioning.desired import MANAGED_TAG, DesiredQueue, DesiredState, DesiredTopic
from s3tasks.provisioning.ownership import (
    Claim,
    Decision,
    Ledger,
    Origin,
    Ownership,
    ResourceKind,
    decide,
    part_identifier,
)
from s3tasks.provisioning.policies import OUR_SIDS, PolicyDiff, diff_policy, merge_policy, sids_of
from s3tasks.provisioning.steps import (
    Action,
    CreateQueue,
    CreateTopic,
    Step,
    UpdateQueue,
    UpdateTopic,
)

JSON_ATTRIBUTES = ("Policy", "RedrivePolicy")
RECOGNISED_NOTE = " (tagged s3tasks:managed by an earlier release: recorded as ours)"
LABELS = {ResourceKind.QUEUE: "SQS queue", ResourceKind.TOPIC: "SNS topic"}
ACTIONS = {
    ResourceKind.QUEUE: (Action.CREATE_QUEUE, Action.UPDATE_QUEUE, Action.ADOPT_QUEUE),
    ResourceKind.TOPIC: (Action.CREATE_TOPIC, Action.UPDATE_TOPIC, Action.ADOPT_TOPIC),
}


def _same_attribute(name: str, wanted: str, current: str | None) -> bool:
    if current is None:
        return False
    if name in JSON_ATTRIBUTES:
        try:
            return json.loads(wanted) == json.loads(current)
        except ValueError:
            return False
    if name == "MaximumMessageSize":
        return int(current) >= int(wanted)
    return wanted == current


def changed_attributes(wanted: dict[str, str], current: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in wanted.items() if not _same_attribute(k, v, current.get(k))}


def foreign_step(kind: ResourceKind, name: str, message: str) -> Step:
    """A blocking note: the models need something that exists and is not ours."""
    return Step(Action.FOREIGN, kind, name, message, pending=False, ownership=Ownership.FOREIGN)


@dataclass(frozen=True)
class Existing:
    """One existing queue or topic as the planner compares it."""

    kind: ResourceKind
    name: str
    arn: str
    attributes: dict[str, str]
    tagged: bool
    address: str  # how apply addresses it: a queue's URL, a topic's ARN

    def update(
        self, attributes: dict[str, str], statements: tuple[dict, ...], remove_sids: tuple[str, ...]
    ) -> UpdateQueue | UpdateTopic:
        """The change that sets `attributes` (queues only) and merges the policy."""
        if self.kind is ResourceKind.QUEUE:
            return UpdateQueue(self.address, attributes, statements, remove_sids)
        return UpdateTopic(self.address, statements, remove_sids)


def _existing(kind: ResourceKind, arn: str, found: CurrentQueue | CurrentTopic) -> Existing:
    address = found.url if isinstance(found, CurrentQueue) else found.arn
    return Existing(kind, found.name, arn, found.attributes, found.tagged, address)


def _statement_claims(
    arn: str, diff: PolicyDiff, wanted: tuple[str, ...], recognised: set[str], ledger: Ledger
) -> list[Claim]:
    claims = []
    for sid in wanted:
        identifier = part_identifier(arn, sid)
        if ledger.owns(ResourceKind.POLICY_STATEMENT, identifier):
            continue
        origin = Origin.CREATED
        if sid in diff.taken_over:
            origin = Origin.ADOPTED
        elif sid in recognised:
            origin = Origin.RECOGNISED
        claims.append(Claim(ResourceKind.POLICY_STATEMENT, identifier, origin))
    return claims


def _policy_plan(
    existing: Existing, statements: tuple[dict, ...], ledger: Ledger, adopt: bool
) -> tuple[PolicyDiff, list[Claim], list[Claim], Step | None]:
    """Statement-level diff, claims/releases, and a blocking step for foreign statements
    that carry a Sid we need (only --adopt takes those over)."""
    recorded = ledger.parts(ResourceKind.POLICY_STATEMENT, existing.arn)
    present = sids_of(existing.attributes.get("Policy"))
    recognised = (OUR_SIDS & present) - recorded if existing.tagged else set()
    diff = diff_policy(existing.attributes.get("Policy"), statements, recorded | recognised)
    if diff.taken_over and not adopt:
        message = (
            f"The policy of {LABELS[existing.kind]} {existing.name} has statement(s) "
            f"{', '.join(diff.taken_over)} with a Sid s3tasks writes, but s3tasks did not write "
            "them: left unchanged. Run sync with --adopt to replace them with s3tasks' own."
        )
        return diff, [], [], foreign_step(existing.kind, existing.name, message)
    wanted = tuple(s["Sid"] for s in statements)
    claims = _statement_claims(existing.arn, diff, wanted, recognised, ledger)
    gone = (recorded - present) - set(wanted)
    releases = [
        Claim(ResourceKind.POLICY_STATEMENT, part_identifier(existing.arn, sid))
        for sid in sorted(set(diff.removed) | gone)
    ]
    return diff, claims, releases, None


def _existing_steps(
    existing: Existing,
    decision: Decision,
    wanted: dict[str, str],
    statements: tuple[dict, ...],
    ledger: Ledger,
    adopt: bool,
) -> list[Step]:
    """Steps for a queue/topic that exists and is ours, recognised or being adopted."""
    label = f"{LABELS[existing.kind]} {existing.name}"
    diff, claims, releases, blocked = _policy_plan(existing, statements, ledger, adopt)
    if blocked is not None:
        return [blocked]
    if decision in (Decision.RECOGNISE, Decision.ADOPT):
        claims.insert(0, Claim(existing.kind, existing.arn, decision.origin))
    changed = changed_attributes(wanted, existing.attributes)
    _, update, adopt_action = ACTIONS[existing.kind]
    parts = [f"set {', '.join(sorted(changed))}"] if changed else []
    if diff.changed:
        parts.append(diff.describe())
    change = existing.update(changed, statements if diff.changed else (), diff.removed)
    common: dict[str, Any] = {
        "ownership": decision.ownership,
        "claims": tuple(claims),
        "releases": tuple(releases),
    }
    if decision is Decision.ADOPT:
        summary = "; ".join(parts) or "no changes needed"
        if existing.kind is ResourceKind.QUEUE:
            summary += "; attributes no Queue row sets stay as they are"
        message = f"adopt {label}: {summary}"
        return [Step(adopt_action, existing.kind, existing.name, message, change, **common)]
    note = RECOGNISED_NOTE if decision is Decision.RECOGNISE else ""
    if decision is Decision.MANAGE_ADOPTED:
        note = " (adopted)"
    if parts:
        message = f"update {label}{note}: {'; '.join(parts)}"
        return [Step(update, existing.kind, existing.name, message, change, **common)]
    if claims or releases:
        message = f"update the ownership records of {label}"
        if decision is Decision.RECOGNISE:
            message = f"record {label} as s3tasks'{RECOGNISED_NOTE}"
        return [Step(Action.RECORD, existing.kind, existing.name, message, **common)]
    return []


def _create_step(
    kind: ResourceKind,
    name: str,
    arn: str,
    attributes: dict[str, str],
    statements: tuple[dict, ...],
    note: str = "",
) -> Step:
    """Create a missing queue/topic, tagged and recorded as ours."""
    claims = (Claim(kind, arn),) + tuple(
        Claim(ResourceKind.POLICY_STATEMENT, part_identifier(arn, s["Sid"])) for s in statements
    )
    tags = {MANAGED_TAG: "true"}
    change = (
        CreateQueue(name, dict(attributes), tags)  # its policy is in `attributes` already
        if kind is ResourceKind.QUEUE
        else CreateTopic(name, tags, statements)
    )
    action = ACTIONS[kind][0]
    return Step(action, kind, name, f"create {LABELS[kind]} {name}{note}", change, claims=claims)


def _decision(
    kind: ResourceKind,
    arn: str,
    found: CurrentQueue | CurrentTopic | None,
    ledger: Ledger,
    adopt: bool,
) -> Decision:
    return decide(
        exists=found is not None,
        recorded=ledger.origin(kind, arn),
        recognised=found is not None and found.tagged,
        adopt=adopt,
    )


def _needed_dlqs(desired: DesiredState, decisions: dict[str, Decision]) -> set[str]:
    """Automatic DLQs are only wanted by queues that get their redrive policy: not by one
    adopted without a row naming a DLQ, nor by a foreign one."""
    needed = set()
    for q in desired.queues:
        decision = decisions[q.name]
        policy = q.attributes.get("RedrivePolicy")
        if not policy or decision is Decision.FOREIGN:
            continue
        if not decision.adopted or "RedrivePolicy" in q.explicit:
            needed.add(json.loads(policy)["deadLetterTargetArn"])
    return needed


def queue_steps(
    desired: DesiredState, current: CurrentState, ledger: Ledger, adopt: bool
) -> list[Step]:
    decisions = {
        q.name: _decision(ResourceKind.QUEUE, q.arn, current.queues.get(q.name), ledger, adopt)
        for q in desired.queues
    }
    needed = _needed_dlqs(desired, decisions)
    steps: list[Step] = []
    for q in desired.queues:
        if q.is_implicit_dlq and q.arn not in needed:
            continue
        steps += _queue_steps(q, decisions[q.name], current.queues.get(q.name), ledger, adopt)
    return steps


def _queue_steps(
    q: DesiredQueue, decision: Decision, found: CurrentQueue | None, ledger: Ledger, adopt: bool
) -> list[Step]:
    if decision is Decision.CREATE:
        attributes = dict(q.attributes)
        if q.statements:
            attributes["Policy"] = merge_policy(None, q.statements)
        note = " (dead-letter queue)" if q.is_implicit_dlq else ""
        return [_create_step(ResourceKind.QUEUE, q.name, q.arn, attributes, q.statements, note)]
    assert found is not None
    if decision is Decision.FOREIGN:
        message = (
            f"SQS queue {q.name} exists but s3tasks did not create it: left unchanged. Run "
            "sync with --adopt to manage it (its other policy statements, and the attributes "
            "no Queue row sets, are kept), or send the rules to another queue."
        )
        return [foreign_step(ResourceKind.QUEUE, q.name, message)]
    wanted = q.attributes
    if decision.adopted:
        wanted = {k: v for k, v in q.attributes.items() if k in q.explicit}
    existing = _existing(ResourceKind.QUEUE, q.arn, found)
    return _existing_steps(existing, decision, wanted, q.statements, ledger, adopt)


def topic_steps(
    desired: DesiredState, current: CurrentState, ledger: Ledger, adopt: bool
) -> list[Step]:
    steps: list[Step] = []
    for t in desired.topics:
        found = current.topics.get(t.name)
        decision = _decision(ResourceKind.TOPIC, t.arn, found, ledger, adopt)
        steps += _topic_steps(t, decision, found, ledger, adopt)
    return steps


def _topic_steps(
    t: DesiredTopic, decision: Decision, found: CurrentTopic | None, ledger: Ledger, adopt: bool
) -> list[Step]:
    if decision is Decision.CREATE:
        return [_create_step(ResourceKind.TOPIC, t.name, t.arn, {}, t.statements)]
    assert found is not None
    if decision is Decision.FOREIGN:
        message = (
            f"SNS topic {t.name} exists but s3tasks did not create it: left unchanged. Run "
            "sync with --adopt to manage it (its other policy statements are kept), or use "
            "another topic name."
        )
        return [foreign_step(ResourceKind.TOPIC, t.name, message)]
    existing = _existing(ResourceKind.TOPIC, t.arn, found)
    return _existing_steps(existing, decision, {}, t.statements, ledger, adopt)
