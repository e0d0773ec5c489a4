"""`route(event) -> list[Route]`: which handlers run for an event, from enabled rules.

Rules are compiled into an in-memory index per process and reloaded when the
`RulesVersion` row changes (checked at most every `S3TASKS["RULES_CHECK_INTERVAL"]`
seconds), so a long-running worker sees admin edits within seconds without a query per event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from s3tasks.events import EventSource, S3Event
from s3tasks.rules.filters import event_matches, normalize_event_pattern

logger = logging.getLogger(__name__)

# How an object can have been created. A backfill event (an object already in the bucket,
# created we cannot tell how) matches a rule for any of them; removal rules never match it.
CREATED_EVENT_NAMES = (
    "ObjectCreated:Put",
    "ObjectCreated:Post",
    "ObjectCreated:Copy",
    "ObjectCreated:CompleteMultipartUpload",
)


@dataclass(frozen=True)
class Route:
    """One handler to run for an event, and the binding that asked for it."""

    handler_name: str
    rule_id: int | None = None
    binding_id: int | None = None
    celery_queue: str = ""


@dataclass(frozen=True)
class CompiledRule:
    """A rule reduced to what matching needs."""

    events: tuple[str, ...]
    prefix: str
    suffix: str
    routes: tuple[Route, ...]

    def matches(self, event_name: str, key: str) -> bool:
        return key.endswith(self.suffix) and any(event_matches(p, event_name) for p in self.events)


class BucketIndex:
    """A bucket's rules grouped by exact prefix: a lookup per distinct prefix length."""

    def __init__(self, rules: Iterable[CompiledRule]) -> None:
        by_prefix: dict[str, list[CompiledRule]] = defaultdict(list)
        for rule in rules:
            by_prefix[rule.prefix].append(rule)
        self.by_prefix = {p: tuple(r) for p, r in by_prefix.items()}
        self.lengths = tuple(sorted({len(p) for p in self.by_prefix}))

    def match(self, event_name: str, key: str) -> list[Route]:
        found: list[Route] = []
        key_length = len(key)
        for length in self.lengths:
            if length > key_length:
                break
            rules = self.by_prefix.get(key[:length])
            if rules:
                for rule in rules:
                    if rule.matches(event_name, key):
                        found.extend(rule.routes)
        return found


class RuleIndex:
    """Every enabled rule with at least one enabled binding, indexed by bucket."""

    def __init__(self, rules_by_bucket: dict[str, list[CompiledRule]], version: int = 0) -> None:
        self.version = version
        self.buckets = {b: BucketIndex(rules) for b, rules in rules_by_bucket.items()}
        self.rule_count = sum(len(r) for r in rules_by_bucket.values())

    def route(self, event: S3Event) -> list[Route]:
        if event.source == EventSource.BACKFILL:
            return self.route_backfill(event)
        index = self.buckets.get(event.bucket)
        if index is None:
            return []
        routes = index.match(event.event_name, event.key)
        if len(routes) < 2:
            return routes
        return _unique(routes)

    def route_backfill(self, event: S3Event) -> list[Route]:
        """The rules for any object creation; or, when the backfill named handlers, exactly
        those (with the route of a rule that binds one, for its Celery queue)."""
        index = self.buckets.get(event.bucket)
        found = _unique(
            [r for name in CREATED_EVENT_NAMES for r in index.match(name, event.key)]
            if index is not None
            else []
        )
        named = event.backfill_handlers
        if not named:
            return found
        by_name = {r.handler_name: r for r in found}
        return [by_name.get(name) or Route(handler_name=name) for name in dict.fromkeys(named)]


def _unique(routes: list[Route]) -> list[Route]:
    """A handler runs once per event even if several rules match (the first rule's route)."""
    unique: dict[str, Route] = {}
    for r in routes:
        unique.setdefault(r.handler_name, r)
    return list(unique.values())


def load_index() -> RuleIndex:
    """Compile the enabled rules and bindings from the database."""
    from s3tasks.models import HandlerBinding, RulesVersion

    version = RulesVersion.current()
    bindings = (
        HandlerBinding.objects.filter(enabled=True, rule__enabled=True)
        .select_related("rule__bucket")
        .order_by("rule_id", "pk")
    )
    per_rule: dict[int, list[Route]] = defaultdict(list)
    rules = {}
    for b in bindings:
        rules[b.rule_id] = b.rule
        per_rule[b.rule_id].append(
            Route(
                handler_name=b.handler_name,
                rule_id=b.rule_id,
                binding_id=b.pk,
                celery_queue=b.celery_queue,
            )
        )
    by_bucket: dict[str, list[CompiledRule]] = defaultdict(list)
    for rule_id, rule in rules.items():
        try:
            events = tuple(normalize_event_pattern(str(e)) for e in rule.events)
        except ValueError as exc:
            logger.error("s3tasks: skipping rule %s (id %s): %s", rule, rule_id, exc)
            continue
        by_bucket[rule.bucket.name].append(
            CompiledRule(events, rule.prefix, rule.suffix, tuple(per_rule[rule_id]))
        )
    return RuleIndex(by_bucket, version)


class Router:
    """A process-wide cache of the rule index that reloads when the rules change."""

    def __init__(self) -> None:
        self._index: RuleIndex | None = None
        self._checked_at = 0.0
        self._lock = threading.Lock()

    def index(self) -> RuleIndex:
        from s3tasks.conf import get_settings

        now = time.monotonic()
        index = self._index
        if index is not None and now - self._checked_at < get_settings().RULES_CHECK_INTERVAL:
            return index
        with self._lock:
            if self._index is not None and now - self._checked_at < (
                get_settings().RULES_CHECK_INTERVAL
            ):
                return self._index
            from s3tasks.models import RulesVersion

            if self._index is None or RulesVersion.current() != self._index.version:
                self._index = load_index()
                logger.debug(
                    "s3tasks: loaded %d rules (version %d)",
                    self._index.rule_count,
                    self._index.version,
                )
            self._checked_at = time.monotonic()
            return self._index

    def invalidate(self) -> None:
        with self._lock:
            self._index = None

    def route(self, event: S3Event) -> list[Route]:
        return self.index().route(event)


router = Router()


def route(event: S3Event) -> list[Route]:
    """The handlers that should run for `event`, from enabled rules (cached, auto-reloaded)."""
    return router.route(event)


def rules_changed(**kwargs: Any) -> None:
    """Receiver for save/delete of configuration models: bump the version, drop our cache."""
    from s3tasks.models import RulesVersion

    if kwargs.get("raw"):
        return
    RulesVersion.bump()
    router.invalidate()
