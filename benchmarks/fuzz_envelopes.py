"""The long poison run: 10,000+ Hypothesis examples against envelope parsing.

The same strategies and properties as tests/test_poison_fuzz.py (tests/poison_cases.py),
run long: random JSON, real samples mutated anywhere (inside nested JSON too), real samples
with edited bytes, and Lambda SQS events split into records. A property that fails is
counted, not raised, so one run reports every kind of failure it met. No database needed.

    python benchmarks/fuzz_envelopes.py [--examples 10000] [--seed 1]

Exit status 1 when any example failed.
"""

from __future__ import annotations

import argparse
import os
import re
import reprlib
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from poison_cases import (  # noqa: E402
    byte_edited_samples,
    lambda_sqs_events,
    mutated_samples,
    random_payloads,
    sqs_violation,
    violation,
)


class ShortRepr(reprlib.Repr):
    """Bounded: samples can be huge, deeply nested, or hold integers too long to print."""

    def repr_int(self, x: int, level: int) -> str:
        return f"<int of {x.bit_length():,} bits>" if x.bit_length() > 10_000 else repr(x)


SHORT = ShortRepr()
SHORT.maxstring = SHORT.maxother = 200
SHORT.maxlevel = 4

PROPERTIES: list[tuple[str, st.SearchStrategy[Any], Callable[[Any], str | None]]] = [
    ("random JSON", random_payloads(), violation),
    ("mutated samples", mutated_samples(), violation),
    ("byte-edited samples", byte_edited_samples(), violation),
    ("Lambda SQS records", lambda_sqs_events(), sqs_violation),
]


def run_property(
    strategy: st.SearchStrategy[Any],
    check: Callable[[Any], str | None],
    examples: int,
    rng_seed: int,
) -> tuple[int, Counter[str], dict[str, Any]]:
    """Run `examples` examples; return how many ran, failure kinds, and one example of each."""
    ran = 0
    failures: Counter[str] = Counter()
    samples: dict[str, Any] = {}

    @seed(rng_seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # no shrinking: failures are collected, not raised
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def probe(payload: Any) -> None:
        nonlocal ran
        ran += 1
        problem = check(payload)
        if problem:
            kind = re.sub(r"\d[\d,]*", "N", problem)[:80]  # one kind, whatever the numbers
            failures[kind] += 1
            samples.setdefault(kind, payload)

    probe()
    return ran, failures, samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000, help="examples in all")
    parser.add_argument("--seed", type=int, default=1, help="Hypothesis seed (reproducible)")
    args = parser.parse_args()
    per_property = max(args.examples // len(PROPERTIES), 1)
    load_before = os.getloadavg()
    began = time.perf_counter()
    total_ran, total_failed = 0, 0
    for name, strategy, check in PROPERTIES:
        started = time.perf_counter()
        ran, failures, samples = run_property(strategy, check, per_property, args.seed)
        failed = sum(failures.values())
        total_ran, total_failed = total_ran + ran, total_failed + failed
        print(
            f"{name:22s} {ran:>6,} examples  {failed:>4} failed  "
            f"{time.perf_counter() - started:6.1f} s"
        )
        for kind, count in failures.most_common():
            print(f"    {count:>5} × {kind}")
            print(f"          e.g. {SHORT.repr(samples[kind])}")
    elapsed = time.perf_counter() - began
    load_after = os.getloadavg()
    print(
        f"total: {total_ran:,} examples, {total_failed} failures, {elapsed:.1f} s "
        f"({total_ran / elapsed:,.0f} examples/s); load average before "
        f"{load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)"
    )
    return 1 if total_failed else 0


if __name__ == "__main__":
    sys.exit(main())
