"""Compile notification rules into entries S3 accepts, and merge them into a bucket's config.

Pure functions. S3 rejects two entries for a common event type whose key filters overlap, so
rules that share a destination and overlap become one wider entry (s3tasks' routing does the
precise filtering afterwards); rules that overlap but go to different destinations are an
error to report before AWS is called.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from s3tasks.exceptions import OverlappingRules
from s3tasks.rules.filters import (
    FilterEntry,
    events_overlap,
    find_clashes,
    normalize_event_pattern,
    prefixes_overlap,
    suffixes_overlap,
)

OWNED_ID_PREFIX = "s3tasks-"
CONFIG_KEYS = {
    "queue": ("QueueConfigurations", "QueueArn"),
    "topic": ("TopicConfigurations", "TopicArn"),
}
FOREIGN_ONLY_KEYS = ("LambdaFunctionConfigurations",)
MAX_ID_LENGTH = 120


@dataclass(frozen=True)
class NotificationEntry:
    """One s3tasks-owned S3 notification entry: events + key filter → one queue or topic."""

    id: str
    kind: str  # "queue" or "topic"
    arn: str
    events: tuple[str, ...]  # "s3:ObjectCreated:*" form, sorted
    prefix: str = ""
    suffix: str = ""
    rule_ids: tuple[int, ...] = ()  # the rules this entry serves (its Id is made from them)

    def to_s3(self) -> dict[str, Any]:
        """The entry as `put_bucket_notification_configuration` wants it.

        Filter rule names are lower-case: S3 accepts both, and moto crashes on `Prefix`.
        """
        _, arn_key = CONFIG_KEYS[self.kind]
        entry: dict[str, Any] = {"Id": self.id, arn_key: self.arn, "Events": list(self.events)}
        rules = [
            {"Name": n, "Value": v}
            for n, v in (("prefix", self.prefix), ("suffix", self.suffix))
            if v
        ]
        if rules:
            entry["Filter"] = {"Key": {"FilterRules": rules}}
        return entry

    def describe(self) -> str:
        filters = [f"{n} {v!r}" for n, v in (("prefix", self.prefix), ("suffix", self.suffix)) if v]
        target = self.arn.rsplit(":", 1)[-1]
        return (
            f"{self.id}: {', '.join(self.events)} "
            f"({', '.join(filters) or 'every key'}) → {self.kind} {target}"
        )


def _simplify_events(events: Iterable[str]) -> tuple[str, ...]:
    """Drop specific event names already covered by a wildcard in the same set."""
    names = {normalize_event_pattern(e) for e in events}
    wildcards = {n[:-1] for n in names if n.endswith("*")}
    kept = {n for n in names if n.endswith("*") or not any(n.startswith(w) for w in wildcards)}
    return tuple(sorted(f"s3:{n}" for n in kept))


def _common_suffix(values: Sequence[str]) -> str:
    return os.path.commonprefix([v[::-1] for v in values])[::-1]


def _overlaps(a: NotificationEntry, b: NotificationEntry) -> bool:
    return (
        events_overlap(
            [normalize_event_pattern(e) for e in a.events],
            [normalize_event_pattern(e) for e in b.events],
        )
        and prefixes_overlap(a.prefix, b.prefix)
        and suffixes_overlap(a.suffix, b.suffix)
    )


def _merge(a: NotificationEntry, b: NotificationEntry) -> NotificationEntry:
    return replace(
        a,
        events=_simplify_events(a.events + b.events),
        prefix=os.path.commonprefix([a.prefix, b.prefix]),
        suffix=_common_suffix([a.suffix, b.suffix]),
        rule_ids=tuple(sorted(set(a.rule_ids + b.rule_ids))),
    )


def _merge_overlapping(entries: list[NotificationEntry]) -> list[NotificationEntry]:
    """Merge same-destination entries until none overlap (a widened entry may newly overlap
    another one, hence the loop), then fold entries with identical filters together."""
    merged = list(entries)
    changed = True
    while changed:
        changed = False
        for i, a in enumerate(merged):
            for j in range(i + 1, len(merged)):
                if _overlaps(a, merged[j]):
                    merged[i] = _merge(a, merged.pop(j))
                    changed = True
                    break
            if changed:
                break
    by_filter: dict[tuple[str, str], NotificationEntry] = {}
    for entry in merged:
        key = (entry.prefix, entry.suffix)
        by_filter[key] = _merge(by_filter[key], entry) if key in by_filter else entry
    return list(by_filter.values())


def entry_id(rule_ids: Sequence[int]) -> str:
    """A stable Id from the rule ids an entry serves: `s3tasks-rule-7`, `s3tasks-rules-3-5`."""
    ids = sorted(set(rule_ids))
    text = f"rule-{ids[0]}" if len(ids) == 1 else "rules-" + "-".join(map(str, ids))
    if len(OWNED_ID_PREFIX + text) > MAX_ID_LENGTH:
        text = "rules-" + hashlib.sha256(text.encode()).hexdigest()[:20]
    return OWNED_ID_PREFIX + text


@dataclass(frozen=True)
class RuleTarget:
    """One rule as compilation sees it: its id/label, events, filter and resolved destination."""

    rule_id: int
    label: str
    events: tuple[str, ...]
    prefix: str
    suffix: str
    kind: str
    arn: str


def compile_entries(targets: Sequence[RuleTarget]) -> tuple[NotificationEntry, ...]:
    """One bucket's rules → non-overlapping entries (raises `OverlappingRules` on a clash)."""

    clashes = find_clashes(
        [
            FilterEntry(
                t.label,
                tuple(normalize_event_pattern(e) for e in t.events),
                t.prefix,
                t.suffix,
                f"{t.kind} {t.arn.rsplit(':', 1)[-1]}",
            )
            for t in targets
        ]
    )
    if clashes:
        raise OverlappingRules(clashes)
    by_destination: dict[tuple[str, str], list[NotificationEntry]] = {}
    for t in targets:
        entry = NotificationEntry(
            id="",
            kind=t.kind,
            arn=t.arn,
            events=_simplify_events(t.events),
            prefix=t.prefix,
            suffix=t.suffix,
            rule_ids=(t.rule_id,),
        )
        by_destination.setdefault((t.kind, t.arn), []).append(entry)
    compiled = [
        replace(entry, id=entry_id(entry.rule_ids))
        for group in by_destination.values()
        for entry in _merge_overlapping(group)
    ]
    return tuple(sorted(compiled, key=lambda e: e.id))


def queue_and_topic_entries(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Id → entry of every queue/topic entry in a bucket's configuration (whoever made it);
    `ownership` decides which of them are ours."""
    found: dict[str, dict[str, Any]] = {}
    for list_key, _ in CONFIG_KEYS.values():
        for entry in config.get(list_key, []):
            found[str(entry.get("Id", ""))] = entry
    return found


def normalize_s3_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry read back from S3 in our canonical form (filter names lower-case, events
    sorted) so that comparing it with a desired entry ignores S3's/moto's spelling."""
    result = {k: v for k, v in entry.items() if k != "Filter"}
    result["Events"] = sorted(entry.get("Events", []))
    rules = entry.get("Filter", {}).get("Key", {}).get("FilterRules", [])
    cleaned = sorted(
        ({"Name": r["Name"].lower(), "Value": r["Value"]} for r in rules if r.get("Value")),
        key=lambda r: r["Name"],
    )
    if cleaned:
        result["Filter"] = {"Key": {"FilterRules": cleaned}}
    return result


def merge_configuration(
    current: dict[str, Any],
    desired: Sequence[NotificationEntry],
    *,
    owned_ids: Collection[str],
    prune: bool,
    eventbridge: bool | None,
) -> dict[str, Any]:
    """The bucket configuration to write: every foreign entry exactly as read, our desired
    entries (replacing entries with their Ids, which the plan has checked are ours or
    adopted), and our other entries (`owned_ids`) unless pruning. Never mutates `current`."""
    result: dict[str, Any] = {}
    desired_ids = {e.id for e in desired}
    for kind, (list_key, _) in CONFIG_KEYS.items():
        kept = [
            copy.deepcopy(e)
            for e in current.get(list_key, [])
            if e.get("Id") not in desired_ids and (e.get("Id") not in owned_ids or not prune)
        ]
        ours = [e.to_s3() for e in desired if e.kind == kind]
        if kept or ours:
            result[list_key] = kept + ours
    for key in FOREIGN_ONLY_KEYS:
        if key in current:
            result[key] = copy.deepcopy(current[key])
    if eventbridge is None:
        if "EventBridgeConfiguration" in current:
            result["EventBridgeConfiguration"] = copy.deepcopy(current["EventBridgeConfiguration"])
    elif eventbridge:
        result["EventBridgeConfiguration"] = {}
    return result


def configuration_clashes(config: dict[str, Any], owned_ids: Collection[str]) -> list[str]:
    """Overlaps S3 would reject in a whole configuration (ours and foreign entries)."""
    entries = []
    arn_keys = {
        "QueueConfigurations": "QueueArn",
        "TopicConfigurations": "TopicArn",
        "LambdaFunctionConfigurations": "LambdaFunctionArn",
    }
    for list_key, arn_key in arn_keys.items():
        for e in config.get(list_key, []):
            rules = {
                r["Name"].lower(): r["Value"]
                for r in e.get("Filter", {}).get("Key", {}).get("FilterRules", [])
            }
            try:
                events = tuple(normalize_event_pattern(x) for x in e.get("Events", []))
            except ValueError:
                continue
            owner = "s3tasks entry" if e.get("Id") in owned_ids else "entry made outside s3tasks"
            entries.append(
                FilterEntry(
                    f"{owner} {e.get('Id', '?')!r}",
                    events,
                    rules.get("prefix", ""),
                    rules.get("suffix", ""),
                    str(e.get(arn_key, "")),
                )
            )
    return find_clashes(entries)
