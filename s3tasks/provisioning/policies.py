"""Resource policies merged statement by statement (pure): only our Sids are written.

A queue or topic policy may hold statements of other teams (and SNS' default statement);
sync adds, replaces or removes only the statements it owns and copies every other one as read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from s3tasks.exceptions import ProvisioningError

S3_SID = "s3tasks-s3"
SNS_SID = "s3tasks-sns"
OUR_SIDS = frozenset({S3_SID, SNS_SID})
DEFAULT_VERSION = "2012-10-17"


def sender_statements(
    resource_arn: str,
    action: str,
    bucket_arns: Sequence[str],
    topic_arns: Sequence[str],
    account_id: str,
) -> tuple[dict[str, Any], ...]:
    """Statements letting only these buckets (through S3) and topics (through SNS) send."""
    statements: list[dict[str, Any]] = []
    if bucket_arns:
        statements.append(
            {
                "Sid": S3_SID,
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": action,
                "Resource": resource_arn,
                "Condition": {
                    "ArnLike": {"aws:SourceArn": sorted(bucket_arns)},
                    "StringEquals": {"aws:SourceAccount": account_id},
                },
            }
        )
    if topic_arns:
        statements.append(
            {
                "Sid": SNS_SID,
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": action,
                "Resource": resource_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": sorted(topic_arns)}},
            }
        )
    return tuple(statements)


def _document(policy: str | None) -> dict[str, Any]:
    if not policy:
        return {}
    try:
        document = json.loads(policy)
    except ValueError as exc:
        raise ProvisioningError(
            f"A resource policy is not valid JSON ({exc}); fix or clear it in AWS, then sync."
        ) from exc
    return document if isinstance(document, dict) else {}


def statements_of(policy: str | None) -> list[dict[str, Any]]:
    statements = _document(policy).get("Statement", [])
    return [statements] if isinstance(statements, dict) else list(statements)


def sids_of(policy: str | None) -> set[str]:
    return {str(s["Sid"]) for s in statements_of(policy) if s.get("Sid")}


@dataclass(frozen=True)
class PolicyDiff:
    """How our statements differ from a policy read from AWS."""

    added: tuple[str, ...] = ()  # our Sids not there yet
    replaced: tuple[str, ...] = ()  # ours, there, with other content
    removed: tuple[str, ...] = ()  # ours, there, no longer wanted
    taken_over: tuple[str, ...] = ()  # there with our Sid but not recorded as ours
    kept: tuple[str, ...] = ()  # everyone else's statements (Sid or "(no Sid)")

    @property
    def changed(self) -> bool:
        return bool(self.added or self.replaced or self.removed or self.taken_over)

    def describe(self) -> str:
        parts = [
            f"{verb} {', '.join(sids)}"
            for verb, sids in (
                ("add", self.added),
                ("replace", self.replaced),
                ("take over", self.taken_over),
                ("remove", self.removed),
            )
            if sids
        ]
        text = "policy statements: " + "; ".join(parts)
        if self.kept:
            text += f" (kept as read: {', '.join(self.kept)})"
        return text


def diff_policy(
    policy: str | None, ours: Sequence[dict[str, Any]], owned_sids: Iterable[str]
) -> PolicyDiff:
    """Compare our wanted statements with `policy`; `owned_sids` are those recorded as ours."""
    owned = set(owned_sids)
    wanted = {s["Sid"]: s for s in ours}
    present = {str(s.get("Sid", "")): s for s in statements_of(policy)}
    kept = [
        str(s.get("Sid") or "(no Sid)")
        for s in statements_of(policy)
        if s.get("Sid", "") not in owned and s.get("Sid", "") not in wanted
    ]
    return PolicyDiff(
        added=tuple(sorted(set(wanted) - set(present))),
        replaced=tuple(
            sorted(
                sid
                for sid in wanted
                if sid in owned and present.get(sid, wanted[sid]) != wanted[sid]
            )
        ),
        removed=tuple(sorted(sid for sid in owned & set(present) if sid not in wanted)),
        taken_over=tuple(sorted(sid for sid in set(wanted) & set(present) if sid not in owned)),
        kept=tuple(kept),
    )


def merge_policy(
    policy: str | None, ours: Sequence[dict[str, Any]], remove: Iterable[str] = ()
) -> str:
    """`policy` with our statements put in and `remove`d Sids taken out; every other statement
    is copied as read. An empty result is "" (SQS: no policy)."""
    document = _document(policy)
    dropped = {s["Sid"] for s in ours} | set(remove)
    statements = [s for s in statements_of(policy) if s.get("Sid", "") not in dropped]
    statements += [dict(s) for s in ours]
    if not statements:
        return ""
    merged = {k: v for k, v in document.items() if k != "Statement"}
    merged.setdefault("Version", DEFAULT_VERSION)
    merged["Statement"] = statements
    return json.dumps(merged, sort_keys=True)
