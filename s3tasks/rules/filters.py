"""Pure rules about S3 event names and key filters, shared by models, routing, checks and sync."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Every event type S3 Event Notifications accept (without the "s3:" prefix).
S3_EVENT_TYPES: frozenset[str] = frozenset(
    {
        "ObjectCreated:*",
        "ObjectCreated:Put",
        "ObjectCreated:Post",
        "ObjectCreated:Copy",
        "ObjectCreated:CompleteMultipartUpload",
        "ObjectRemoved:*",
        "ObjectRemoved:Delete",
        "ObjectRemoved:DeleteMarkerCreated",
        "ObjectRestore:*",
        "ObjectRestore:Post",
        "ObjectRestore:Completed",
        "ObjectRestore:Delete",
        "ReducedRedundancyLostObject",
        "Replication:*",
        "Replication:OperationFailedReplication",
        "Replication:OperationMissedThreshold",
        "Replication:OperationReplicatedAfterThreshold",
        "Replication:OperationNotTracked",
        "LifecycleExpiration:*",
        "LifecycleExpiration:Delete",
        "LifecycleExpiration:DeleteMarkerCreated",
        "LifecycleTransition",
        "IntelligentTiering",
        "ObjectTagging:*",
        "ObjectTagging:Put",
        "ObjectTagging:Delete",
        "ObjectAcl:Put",
    }
)


def normalize_event_pattern(pattern: str) -> str:
    """`s3:ObjectCreated:*` → `ObjectCreated:*`; raise ValueError for a non-S3 event name."""
    name = pattern.strip()
    if name.startswith("s3:"):
        name = name[3:]
    if name not in S3_EVENT_TYPES:
        raise ValueError(
            f"{pattern!r} is not an S3 event type; use names such as 's3:ObjectCreated:*', "
            "'s3:ObjectCreated:Put' or 's3:ObjectRemoved:*'."
        )
    return name


def s3_event_type(pattern: str) -> str:
    """The form S3's notification configuration wants: `s3:ObjectCreated:*`."""
    return "s3:" + normalize_event_pattern(pattern)


def event_matches(pattern: str, event_name: str) -> bool:
    """Whether a normalized pattern (`ObjectCreated:*` or exact) matches an event name."""
    if pattern.endswith("*"):
        return event_name.startswith(pattern[:-1])
    return pattern == event_name


def events_overlap(first: Iterable[str], second: Iterable[str]) -> bool:
    """Whether two normalized pattern lists can match one common event name."""
    second = list(second)
    for a in first:
        for b in second:
            if event_matches(a, b) or event_matches(b, a):
                return True
    return False


def prefixes_overlap(first: str, second: str) -> bool:
    """A key can start with both (an empty prefix overlaps everything)."""
    return first.startswith(second) or second.startswith(first)


def suffixes_overlap(first: str, second: str) -> bool:
    """A key can end with both (`jpg` and `pg` overlap; an empty suffix overlaps everything)."""
    return first.endswith(second) or second.endswith(first)


def key_matches(key: str, prefix: str, suffix: str) -> bool:
    """S3's own filter semantics: plain, case-sensitive startswith/endswith."""
    return key.startswith(prefix) and key.endswith(suffix)


@dataclass(frozen=True)
class FilterEntry:
    """One notification entry as S3 sees it: events + prefix/suffix → destination."""

    label: str
    events: tuple[str, ...]
    prefix: str
    suffix: str
    destination: str


def entries_clash(a: FilterEntry, b: FilterEntry) -> bool:
    """S3 rejects two entries for a common event type whose prefix and suffix both overlap
    and whose destinations differ."""
    return (
        a.destination != b.destination
        and events_overlap(a.events, b.events)
        and prefixes_overlap(a.prefix, b.prefix)
        and suffixes_overlap(a.suffix, b.suffix)
    )


def describe_entry(entry: FilterEntry) -> str:
    filters = []
    if entry.prefix:
        filters.append(f"prefix {entry.prefix!r}")
    if entry.suffix:
        filters.append(f"suffix {entry.suffix!r}")
    where = ", ".join(filters) or "no filter"
    return f"{entry.label} ({'/'.join(entry.events)}, {where} → {entry.destination})"


def find_clashes(entries: Sequence[FilterEntry]) -> list[str]:
    """Readable description of every pair of entries S3 would reject as overlapping."""
    clashes = []
    for i, a in enumerate(entries):
        for b in entries[i + 1 :]:
            if entries_clash(a, b):
                clashes.append(f"{describe_entry(a)} overlaps {describe_entry(b)}")
    return clashes
