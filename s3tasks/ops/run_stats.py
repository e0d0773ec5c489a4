"""Per-handler figures over a recent window, for the admin's operations dashboard: runs by
state, p50/p95 duration and failure rate.

Runs count in the window they were created in (`created_at`, indexed). Counting is one
`GROUP BY` in the database. Percentiles are the database's `percentile_cont` on PostgreSQL,
over every finished run of the window; other databases have no such aggregate, so there they
are computed here, the same way, over each handler's latest `SAMPLE_LIMIT` finished runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connections, router
from django.db.models import Aggregate, Count, FloatField, QuerySet

from s3tasks.models import HandlerRun, RunState

SAMPLE_LIMIT = 5000  # finished runs per handler behind a percentile computed in Python
FINISHED = (RunState.SUCCEEDED, RunState.FAILED)


@dataclass(frozen=True)
class HandlerFigures:
    """One handler's runs created since the window began."""

    handler_name: str
    counts: dict[str, int] = field(default_factory=dict)  # state → runs
    p50_ms: float | None = None
    p95_ms: float | None = None
    sampled: bool = False  # percentiles from the latest SAMPLE_LIMIT runs, not all of them

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def count(self, state: str) -> int:
        return self.counts.get(state, 0)

    @property
    def failure_rate(self) -> float | None:
        """Failed runs among finished ones (0..1); None when none finished."""
        finished = self.count(RunState.SUCCEEDED) + self.count(RunState.FAILED)
        return self.count(RunState.FAILED) / finished if finished else None


class PercentileCont(Aggregate):
    """PostgreSQL's `percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)`."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: str, fraction: float, **extra: Any) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must be within 0..1, not {fraction!r}")
        super().__init__(expression, fraction=repr(float(fraction)), **extra)


def percentile(ordered: Sequence[float], fraction: float) -> float | None:
    """The `fraction` percentile of ascending `ordered`, interpolated as `percentile_cont`."""
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    below, above = math.floor(position), math.ceil(position)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def handler_figures(since: datetime, *, using: str | None = None) -> list[HandlerFigures]:
    """Every handler with runs created since `since`, the busiest first."""
    db = using or router.db_for_read(HandlerRun)
    window = HandlerRun.objects.using(db).filter(created_at__gte=since)
    counts: dict[str, dict[str, int]] = {}
    rows = window.values_list("handler_name", "state").annotate(n=Count("pk")).order_by()
    for handler_name, state, n in rows:
        counts.setdefault(handler_name, {})[state] = n
    finished = window.filter(state__in=FINISHED, duration_ms__isnull=False)
    if connections[db].vendor == "postgresql":
        spreads = _percentiles_in_database(finished)
    else:
        spreads = {name: _percentiles_from_sample(finished, name) for name in counts}
    figures = [
        HandlerFigures(name, by_state, *spreads.get(name, (None, None, False)))
        for name, by_state in counts.items()
    ]
    return sorted(figures, key=lambda f: (-f.total, f.handler_name))


Spread = tuple[float | None, float | None, bool]  # p50, p95, sampled


def _percentiles_in_database(finished: QuerySet) -> dict[str, Spread]:
    rows = (
        finished.values("handler_name")
        .annotate(
            p50=PercentileCont("duration_ms", 0.5),
            p95=PercentileCont("duration_ms", 0.95),
        )
        .order_by()
    )
    return {row["handler_name"]: (row["p50"], row["p95"], False) for row in rows}


def _percentiles_from_sample(finished: QuerySet, handler_name: str) -> Spread:
    latest = (
        finished.filter(handler_name=handler_name)
        .order_by("-created_at")
        .values_list("duration_ms", flat=True)[: SAMPLE_LIMIT + 1]
    )
    newest_first = list(latest)
    sampled = len(newest_first) > SAMPLE_LIMIT
    durations = sorted(newest_first[:SAMPLE_LIMIT])
    return percentile(durations, 0.5), percentile(durations, 0.95), sampled
