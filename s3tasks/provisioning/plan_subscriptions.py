"""Plan steps for SNS subscriptions (pure), decided by ownership like queues: SQS queues,
and HTTP(S) endpoints (s3tasks' SNS endpoint, docs/sns-endpoint.md).

An HTTP(S) subscription SNS lists as pending (the endpoint never confirmed it) counts as not
made: sync subscribes again, which makes SNS send the confirmation request again."""

from __future__ import annotations

import json
from typing import Any

from s3tasks.provisioning.current import CurrentState, CurrentSubscription
from s3tasks.provisioning.desired import DesiredState, DesiredSubscription
from s3tasks.provisioning.ownership import (
    Claim,
    Decision,
    Ledger,
    Origin,
    ResourceKind,
    decide,
    subscription_identifier,
)
from s3tasks.provisioning.plan_queues import foreign_step
from s3tasks.provisioning.steps import (
    Action,
    Step,
    Subscribe,
    Unsubscribe,
    UpdateSubscription,
)

KIND = ResourceKind.SUBSCRIPTION


def name_of(arn: str) -> str:
    return arn.rsplit(":", 1)[-1]


def _label(topic_arn: str, endpoint: str) -> str:
    """`topic → queue`, or `topic → https://...` for an HTTP(S) endpoint."""
    end = endpoint if endpoint.startswith(("http://", "https://")) else name_of(endpoint)
    return f"{name_of(topic_arn)} → {end}"


def _attributes(sub: DesiredSubscription) -> dict[str, str]:
    policy = json.dumps(sub.filter_policy, sort_keys=True) if sub.filter_policy else ""
    return {
        "RawMessageDelivery": "true" if sub.raw_message_delivery else "false",
        "FilterPolicy": policy,
    }


def _tagged_ends(current: CurrentState, desired: DesiredState) -> set[str]:
    """ARNs of the queues/topics tagged s3tasks:managed (0.1 subscribed only those)."""
    account = desired.account
    arns = {account.sqs_arn(q.name) for q in current.queues.values() if q.tagged}
    return arns | {t.arn for t in current.topics.values() if t.tagged}


def _subscribe_step(sub: DesiredSubscription, pending: bool = False) -> Step:
    label = _label(sub.topic_arn, sub.endpoint)
    raw = " (raw delivery)" if sub.raw_message_delivery else ""
    attributes = {k: v for k, v in _attributes(sub).items() if v}
    change = Subscribe(sub.topic_arn, sub.endpoint, attributes, sub.protocol)
    claims = (Claim(KIND, subscription_identifier(sub.topic_arn, sub.endpoint)),)
    if sub.protocol == "sqs":
        message = f"subscribe queue {label}{raw}"
    elif pending:
        message = (
            f"ask again for confirmation of endpoint {label}: SNS lists it as pending (the "
            "endpoint has not confirmed it; SNS sends the confirmation request again)"
        )
    else:
        message = f"subscribe {sub.protocol} endpoint {label} (the endpoint confirms it)"
    return Step(Action.SUBSCRIBE, KIND, label, message, change, claims=claims)


def _wanted_steps(
    sub: DesiredSubscription, found: CurrentSubscription | None, decision: Decision
) -> list[Step]:
    if decision is Decision.CREATE:
        return [_subscribe_step(sub, pending=found is not None and found.pending)]
    assert found is not None
    label = _label(sub.topic_arn, sub.endpoint)
    if decision is Decision.FOREIGN:
        message = (
            f"Subscription {label} exists but s3tasks did not make it: left unchanged. Run sync "
            "with --adopt to manage it, or remove it in AWS so sync can make its own."
        )
        return [foreign_step(KIND, label, message)]
    identifier = subscription_identifier(sub.topic_arn, sub.endpoint)
    recorded = decision in (Decision.MANAGE, Decision.MANAGE_ADOPTED)
    claims = () if recorded else (Claim(KIND, identifier, decision.origin),)
    common: dict[str, Any] = {"ownership": decision.ownership, "claims": claims}
    differs = (found.raw_message_delivery, found.filter_policy) != (
        sub.raw_message_delivery,
        sub.filter_policy or None,
    )
    attributes = _attributes(sub) if differs else {}
    change = UpdateSubscription(found.arn, sub.topic_arn, sub.endpoint, attributes)
    settings = (
        f"raw delivery {'on' if sub.raw_message_delivery else 'off'}, filter policy "
        f"{'set' if sub.filter_policy else 'none'}"
    )
    if decision is Decision.ADOPT:
        message = f"adopt subscription {label}: " + (settings if differs else "no changes needed")
        return [Step(Action.ADOPT_SUBSCRIPTION, KIND, label, message, change, **common)]
    if differs:
        message = f"update subscription {label}: {settings}"
        return [Step(Action.UPDATE_SUBSCRIPTION, KIND, label, message, change, **common)]
    if claims:
        message = f"record subscription {label} as s3tasks' (made by an earlier release)"
        return [Step(Action.RECORD, KIND, label, message, **common)]
    return []


def _stale_step(found: CurrentSubscription, origin: Origin, prune: bool) -> Step:
    label = _label(found.topic_arn, found.endpoint)
    claim = Claim(KIND, subscription_identifier(found.topic_arn, found.endpoint), origin)
    if origin is Origin.ADOPTED:  # only the record goes: the subscription stays in AWS
        action, what, change = (
            Action.RELEASE_SUBSCRIPTION,
            f"release adopted subscription {label} (kept in AWS)",
            None,
        )
    else:
        action, what = Action.UNSUBSCRIBE, f"remove subscription {label}"
        change = Unsubscribe(found.arn)
    if not prune:
        return Step(Action.KEEP_STALE, KIND, label, f"would {what} (use --prune)", pending=False)
    return Step(action, KIND, label, what, change, releases=(claim,))


def subscription_steps(
    desired: DesiredState, current: CurrentState, ledger: Ledger, *, prune: bool, adopt: bool
) -> list[Step]:
    existing = {(s.topic_arn, s.endpoint): s for s in current.subscriptions}
    tagged = _tagged_ends(current, desired)
    steps: list[Step] = []
    wanted = set()
    for sub in desired.subscriptions:
        key = (sub.topic_arn, sub.endpoint)
        wanted.add(key)
        decision = decide(
            exists=key in existing and not existing[key].pending,
            recorded=ledger.origin(KIND, subscription_identifier(*key)),
            recognised=set(key) <= tagged,
            adopt=adopt,
        )
        steps += _wanted_steps(sub, existing.get(key), decision)
    for key, found in existing.items():
        if key in wanted or found.pending:  # no ARN to unsubscribe until it is confirmed
            continue
        origin = ledger.origin(KIND, subscription_identifier(*key))
        if origin is None and set(key) <= tagged:
            origin = Origin.RECOGNISED
        if origin is not None:
            steps.append(_stale_step(found, origin, prune))
    return steps
