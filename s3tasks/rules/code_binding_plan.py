"""The pure core of code bindings: `@on_s3_event` declarations + stored rows -> a plan.

A code rule is identified by (handler name, bucket). Everything else a decorator says is a
detail that a plan updates in place; rows are paired with declarations per identity, identical
details first, then the most similar row, so changing a prefix is an update, not a new row.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from s3tasks.rules.registry import HandlerRegistry

Action = Literal["create", "update", "remove"]
ACTIONS: tuple[Action, ...] = ("create", "update", "remove")
# The details a decorator declares; a change to any of them updates the row in place.
DETAILS = ("events", "prefix", "suffix", "queue", "topic", "celery_queue", "access")
_KEY_BASE_LIMIT = 280  # NotificationRule.code_key holds 300, leaving room for "#n"


@dataclass(frozen=True)
class Declaration:
    """What one `@on_s3_event` says, in the terms of the rows that mirror it."""

    handler_name: str
    bucket: str
    events: tuple[str, ...]  # as stored: "s3:ObjectCreated:*"
    prefix: str = ""
    suffix: str = ""
    queue: str = ""  # "" when the destination is a topic
    topic: str = ""
    celery_queue: str = ""
    access: str = "read"
    location: str = ""  # "module:line", informational

    @property
    def identity(self) -> tuple[str, str]:
        return (self.handler_name, self.bucket)

    @property
    def rule_name(self) -> str:
        return f"{self.handler_name} on {self.bucket}"[:200]

    def same_details(self, other: Declaration) -> bool:
        return all(getattr(self, name) == getattr(other, name) for name in DETAILS)

    def differences(self, other: Declaration) -> tuple[str, ...]:
        """The details (and location) in which `other` differs from this one."""
        return tuple(
            name for name in (*DETAILS, "location") if getattr(self, name) != getattr(other, name)
        )

    def describe(self) -> str:
        parts = [", ".join(self.events)]
        parts += [f"prefix {self.prefix!r}"] if self.prefix else []
        parts += [f"suffix {self.suffix!r}"] if self.suffix else []
        parts.append(f"-> topic {self.topic}" if self.topic else f"-> queue {self.queue}")
        return " ".join(parts)


@dataclass(frozen=True)
class StoredRule:
    """A code-declared rule row as read from the database."""

    pk: int
    code_key: str
    enabled: bool
    declared: Declaration | None  # None: its code binding row is gone, nothing can match it


@dataclass(frozen=True)
class BindingChange:
    """One step of a plan: create a rule for a declaration, update a row, or remove one."""

    action: Action
    key: str
    wanted: Declaration | None = None
    stored: StoredRule | None = None
    changed: tuple[str, ...] = ()

    @property
    def subject(self) -> str:
        declared = self.wanted or (self.stored.declared if self.stored else None)
        return f"{declared.handler_name} on {declared.bucket}" if declared else self.key

    def describe(self) -> str:
        if self.action == "create":
            assert self.wanted is not None
            return f"+ create {self.subject}: {self.wanted.describe()}"
        assert self.stored is not None
        where = f"rule {self.stored.pk}" + ("" if self.stored.enabled else ", disabled")
        if self.action == "remove":
            return f"- remove {self.subject} ({where}): no longer declared in code"
        assert self.wanted is not None and self.stored.declared is not None
        old, new = self.stored.declared, self.wanted
        edits = "; ".join(
            f"{name} {_show(getattr(old, name))} -> {_show(getattr(new, name))}"
            for name in self.changed
        )
        return f"~ update {self.subject} ({where}): {edits}"


def _show(value: Any) -> str:
    return repr(", ".join(value)) if isinstance(value, tuple) else repr(value)


@dataclass(frozen=True)
class BindingsPlan:
    """What reconciling the code's declarations with the database would change."""

    changes: tuple[BindingChange, ...]
    unchanged: int

    def of(self, action: Action) -> tuple[BindingChange, ...]:
        return tuple(c for c in self.changes if c.action == action)

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def summary(self) -> str:
        counts = ", ".join(f"{len(self.of(a))} to {a}" for a in ACTIONS)
        return f"Code bindings: {counts}, {self.unchanged} unchanged."


def declarations_of(registry: HandlerRegistry, default_queue: str) -> list[Declaration]:
    """Every binding the registry's handlers declare (identical duplicates once)."""
    found = (
        Declaration(
            handler_name=handler.name,
            bucket=b.bucket,
            events=tuple(f"s3:{e}" for e in b.events),
            prefix=b.prefix,
            suffix=b.suffix,
            queue="" if b.topic else (b.queue or default_queue),
            topic=b.topic,
            celery_queue=b.celery_queue,
            access=handler.access,
            location=handler.location,
        )
        for handler in registry
        for b in handler.bindings
    )
    return list(dict.fromkeys(found))


def plan_bindings(
    wanted: Sequence[Declaration], stored: Sequence[StoredRule], taken_keys: Iterable[str]
) -> BindingsPlan:
    """Match declarations to rows per (handler, bucket); the rest is created or removed."""
    rows: dict[tuple[str, str], list[StoredRule]] = defaultdict(list)
    orphans: list[StoredRule] = []
    for row in sorted(stored, key=lambda r: r.pk):
        if row.declared is None:
            orphans.append(row)
        else:
            rows[row.declared.identity].append(row)
    declared: dict[tuple[str, str], list[Declaration]] = defaultdict(list)
    for declaration in wanted:
        declared[declaration.identity].append(declaration)
    keys = set(taken_keys)
    changes: list[BindingChange] = []
    unchanged = 0
    for identity in sorted(set(declared) | set(rows)):
        pairs, missing, unknown = match_group(declared[identity], rows[identity])
        for declaration, row in pairs:
            assert row.declared is not None
            differences = row.declared.differences(declaration)
            if differences:
                changes.append(BindingChange("update", row.code_key, declaration, row, differences))
            else:
                unchanged += 1
        for declaration in missing:
            key = free_key(declaration, keys)
            keys.add(key)
            changes.append(BindingChange("create", key, wanted=declaration))
        changes += [BindingChange("remove", row.code_key, stored=row) for row in unknown]
    changes += [BindingChange("remove", row.code_key, stored=row) for row in orphans]
    return BindingsPlan(tuple(changes), unchanged)


def match_group(
    wanted: Sequence[Declaration], rows: Sequence[StoredRule]
) -> tuple[list[tuple[Declaration, StoredRule]], list[Declaration], list[StoredRule]]:
    """Pair one (handler, bucket)'s declarations with its rows: identical details first, then
    the most similar row (oldest on a tie). Returns pairs, unpaired declarations, unpaired rows.
    """
    free = list(rows)
    pairs: list[tuple[Declaration, StoredRule]] = []
    rest: list[Declaration] = []
    for declaration in wanted:
        row = next((r for r in free if _declared(r).same_details(declaration)), None)
        if row is None:
            rest.append(declaration)
        else:
            free.remove(row)
            pairs.append((declaration, row))
    missing: list[Declaration] = []
    for declaration in rest:
        if not free:
            missing.append(declaration)
            continue
        row = max(free, key=lambda r: (_similarity(_declared(r), declaration), -r.pk))
        free.remove(row)
        pairs.append((declaration, row))
    return pairs, missing, free


def _declared(row: StoredRule) -> Declaration:
    assert row.declared is not None
    return row.declared


def _similarity(a: Declaration, b: Declaration) -> int:
    return sum(getattr(a, name) == getattr(b, name) for name in DETAILS)


def free_key(declaration: Declaration, taken: Collection[str]) -> str:
    """`handler@bucket#n` with the lowest n not taken (long names shortened with a digest).

    Only a unique label: keys are never rewritten, so rows made by older releases (whose keys
    hashed the whole declaration) keep theirs and are matched by handler and bucket instead.
    """
    base = f"{declaration.handler_name}@{declaration.bucket}"
    if len(base) > _KEY_BASE_LIMIT:
        digest = hashlib.sha256(declaration.handler_name.encode()).hexdigest()[:16]
        base = f"{declaration.handler_name[:190]}~{digest}@{declaration.bucket}"
    n = 1
    while f"{base}#{n}" in taken:
        n += 1
    return f"{base}#{n}"
