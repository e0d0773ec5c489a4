"""Routing time per event with 10, 1,000 and 10,000 rules.

Compares s3tasks' prefix-indexed `RuleIndex` against a baseline measured in the same run: the
straightforward linear scan over every rule (what a hand-written router does). Pure Python,
no database: the index is what `route()` consults between reloads.

    python benchmarks/routing.py [--events 20000]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from s3tasks.events import S3Event  # noqa: E402
from s3tasks.rules.filters import event_matches, key_matches  # noqa: E402
from s3tasks.rules.routing import CompiledRule, Route, RuleIndex  # noqa: E402

EVENT_FAMILIES = [("ObjectCreated:*",), ("ObjectRemoved:*",), ("ObjectCreated:Put",)]
SUFFIXES = ["", ".csv", ".jpg", ".json"]


def make_rules(count: int, rng: random.Random) -> dict[str, list[CompiledRule]]:
    """`count` rules, 90% on one hot bucket: one rule per tenant prefix, plus five catch-all
    rules (no prefix) such as an audit log — each event matches a handful of rules."""
    by_bucket: dict[str, list[CompiledRule]] = {}
    for i in range(count):
        bucket = "hot-bucket" if i % 10 or i < 5 else f"bucket-{i % 7}"
        prefix = f"tenant-{i}/uploads/" if i >= 5 else ""
        rule = CompiledRule(
            events=rng.choice(EVENT_FAMILIES),
            prefix=prefix,
            suffix=rng.choice(SUFFIXES),
            routes=(Route(f"handler_{i}", rule_id=i, binding_id=i),),
        )
        by_bucket.setdefault(bucket, []).append(rule)
    return by_bucket


def make_events(count: int, rules: int, rng: random.Random) -> list[S3Event]:
    names = ["ObjectCreated:Put", "ObjectCreated:Copy", "ObjectRemoved:Delete"]
    return [
        S3Event(
            bucket="hot-bucket",
            key=f"tenant-{rng.randrange(rules * 2)}/uploads/{rng.randrange(10**6)}"
            f"{rng.choice(SUFFIXES) or '.bin'}",
            event_name=rng.choice(names),
        )
        for _ in range(count)
    ]


def linear_route(rules: dict[str, list[CompiledRule]], event: S3Event) -> list[Route]:
    found = []
    for rule in rules.get(event.bucket, ()):
        if key_matches(event.key, rule.prefix, rule.suffix) and any(
            event_matches(p, event.event_name) for p in rule.events
        ):
            found.extend(rule.routes)
    return found


def per_event_us(func, events: list[S3Event], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for event in events:
            func(event)
        best = min(best, time.perf_counter() - start)
    return best / len(events) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    args = parser.parse_args()
    rng = random.Random(42)
    print(f"{'rules':>7} | {'s3tasks index µs/event':>22} | {'linear scan µs/event':>20} | speedup")
    print("-" * 72)
    for count in (10, 1_000, 10_000):
        rules = make_rules(count, rng)
        index = RuleIndex(rules)
        events = make_events(args.events, count, rng)
        for event in events[:200]:  # both strategies must agree
            assert sorted(r.handler_name for r in index.route(event)) == sorted(
                {r.handler_name for r in linear_route(rules, event)}
            )
        linear_events = events if count <= 1000 else events[: max(200, args.events // 50)]
        ours = per_event_us(index.route, events)
        linear = per_event_us(lambda e, rules=rules: linear_route(rules, e), linear_events)
        print(f"{count:>7} | {ours:>22.2f} | {linear:>20.2f} | {linear / ours:>6.1f}x")


if __name__ == "__main__":
    main()
