"""Ownership records in the database (`ManagedResource`): read once per plan, written by apply.

The only module of provisioning that reads or writes those rows; the planner works on the
`Ledger` value it returns.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from s3tasks.models import ManagedResource, NotificationRule
from s3tasks.provisioning.ownership import Claim, Ledger, Origin


def load_ledger() -> Ledger:
    """Every ownership record, plus each bucket's rule ids (to recognise 0.1's entries)."""

    records = {
        (kind, identifier): Origin(origin)
        for kind, identifier, origin in ManagedResource.objects.values_list(
            "kind", "identifier", "origin"
        )
    }
    rule_ids: dict[str, set[int]] = defaultdict(set)
    for bucket, pk in NotificationRule.objects.values_list("bucket__name", "pk"):
        rule_ids[bucket].add(pk)
    return Ledger(records, {b: frozenset(ids) for b, ids in rule_ids.items()})


class DatabaseLedger:
    """The `LedgerWriter` apply uses: one small write per step, outside any long transaction,
    so what is recorded matches what AWS did even if the process dies mid-plan."""

    def claim(self, claims: Iterable[Claim], region: str) -> list[Claim]:

        new = []
        for claim in claims:
            row, created = ManagedResource.objects.get_or_create(
                kind=claim.kind,
                identifier=claim.identifier,
                defaults={"origin": claim.origin, "region": region},
            )
            if created:
                new.append(claim)
            elif claim.origin is Origin.CREATED and row.origin != Origin.CREATED:
                # Recorded as adopted, gone from AWS, made again by sync: ours now.
                ManagedResource.objects.filter(pk=row.pk).update(origin=Origin.CREATED)
        return new

    def release(self, claims: Iterable[Claim]) -> None:

        for claim in claims:
            ManagedResource.objects.filter(kind=claim.kind, identifier=claim.identifier).delete()
