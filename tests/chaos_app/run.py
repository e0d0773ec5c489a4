"""One chaos run: feed the events, drain them with worker processes while kills and an outage
happen at set points of progress (follow-ups received), then count what happened.

    result, pool, schedule = run_chaos(sqs, env, queues, ChaosRun(events=300, kills=4), logs)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos_app.harness import (
    BUCKET,
    ChaosQueues,
    FollowupCollector,
    WorkerPool,
    event_bodies,
    event_keys,
    manage,
    queue_depth,
    read_report,
    send_bodies,
)

KILL_SPACING = 1.0  # seconds between kills at least: a replacement worker takes ~1 s to start
SETTLE_TIMEOUT = 45.0  # > the outbox claim (15 s) + the workers' relay interval (5 s), loaded


@dataclass(frozen=True)
class ChaosResult:
    """One run's figures (the table `benchmarks/chaos.py` prints)."""

    messages: int
    events: int
    kills: int
    lost: int
    duplicate_side_effects: int
    followups_sent: int
    followups_duplicated: int
    events_with_two_followups: int
    dlq: int
    outbox_unsent: int
    elapsed: float
    drained: bool
    mark_lag_ms: tuple[int, int] = (0, 0)  # SQS accepted → marked sent, median and 90th pct
    load: tuple[float, float, float] = field(default_factory=os.getloadavg)
    details: dict[str, Any] = field(default_factory=dict, compare=False)  # for failure messages

    @property
    def duplicates_per_kill(self) -> float:
        return self.followups_duplicated / self.kills if self.kills else 0.0


@dataclass(frozen=True)
class Outage:
    """Take a service down for `seconds` once `at_fraction` of the follow-ups arrived."""

    seconds: float
    stop: Callable[[], None]
    start: Callable[[], None]
    at_fraction: float = 0.3


@dataclass(frozen=True)
class ChaosRun:
    """What to run: the events and their packing, the workers, and what to break."""

    events: int
    per_message: int = 1
    workers: int = 3
    worker_args: tuple[str, ...] = ()
    kills: int = 0
    outage: Outage | None = None
    timeout: float = 120.0
    max_depth: int = 200  # messages in the event queue at most (moto slows down with depth)


class Schedule:
    """Per poll: top up the event queue, kill a worker when its turn comes, run the outage."""

    def __init__(self, pool: WorkerPool, plan: ChaosRun, bodies: Sequence[str]) -> None:
        self.pool = pool
        self.plan = plan
        self.unsent = list(bodies)
        self.outage_began: float | None = None
        self.outage_ended = False
        self.last_kill = 0.0
        self.log: list[str] = []

    def feed(self, sqs: Any, url: str, depth: int) -> None:
        room = self.plan.max_depth - depth
        if self.unsent and room >= self.plan.max_depth // 2:
            chunk, self.unsent = self.unsent[:room], self.unsent[room:]
            send_bodies(sqs, url, chunk)

    def step(self, covered: int) -> None:
        self._maybe_kill(covered)
        self._maybe_outage(covered)

    def _maybe_kill(self, covered: int) -> None:
        done, wanted, now = self.pool.kills, self.plan.kills, time.monotonic()
        due = (done + 1) * self.plan.events / (wanted + 2)  # spread over the drain
        if done < wanted and covered >= due and now - self.last_kill >= KILL_SPACING:
            self.pool.kill_one()
            self.last_kill = now
            self.log.append(f"kill {done + 1} at {covered} follow-ups")

    def _maybe_outage(self, covered: int) -> None:
        outage = self.plan.outage
        if outage is None or self.outage_ended:
            return
        if self.outage_began is None and covered >= outage.at_fraction * self.plan.events:
            outage.stop()
            self.outage_began = time.monotonic()
            self.log.append(f"outage began at {covered} follow-ups")
        elif self.outage_began is not None:
            if time.monotonic() - self.outage_began >= outage.seconds:
                self.finish()

    def finish(self) -> None:
        """End an outage still under way (a run that timed out must not leave it down)."""
        outage = self.plan.outage
        if outage is None or self.outage_began is None or self.outage_ended:
            return
        outage.start()
        self.outage_ended = True
        self.log.append(f"outage ended after {time.monotonic() - self.outage_began:.1f}s")


def wait_drained(
    sqs: Any, queues: ChaosQueues, collector: FollowupCollector, schedule: Schedule
) -> bool:
    """Poll until every event was fed, the event queue is empty and every event's follow-up
    arrived (True), or until the plan's timeout (False)."""
    plan = schedule.plan
    deadline = time.monotonic() + plan.timeout
    while time.monotonic() < deadline:
        covered = collector.covered()
        try:
            depth = queue_depth(sqs, queues.url)
            schedule.feed(sqs, queues.url, depth)
        except Exception:  # moto restarting: poll again
            depth = -1
        schedule.step(covered)
        if depth == 0 and not schedule.unsent and covered >= plan.events:
            return True
        time.sleep(0.25)
    return False


def wait_settled(env: dict[str, str], events: int, timeout: float) -> bool:
    """Until the outbox has no unsent entry (the surviving workers' relays send what a killed
    one claimed once its claim expires), or `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if read_report(env, events)["outbox_unsent"] == 0:
            return True
        time.sleep(2)
    return False


def run_chaos(
    sqs: Any, env: dict[str, str], queues: ChaosQueues, plan: ChaosRun, log_dir: Path
) -> tuple[ChaosResult, WorkerPool, Schedule]:
    """Feed the events, drain them with `plan.workers` workers while breaking things, count."""
    env = {**env, "CHAOS_FOLLOWUP_QUEUE": queues.followup_name}
    keys = event_keys(plan.events)
    bodies = event_bodies(keys, plan.per_message)
    manage(env, "chaos", "setup", "--bucket", BUCKET)
    collector = FollowupCollector(sqs, queues.followup_url)
    collector.start()
    pool = WorkerPool(env, ["--queue", queues.url, *plan.worker_args], log_dir, plan.workers)
    schedule = Schedule(pool, plan, bodies)
    schedule.feed(sqs, queues.url, 0)
    began = time.monotonic()
    pool.start()
    try:
        drained = wait_drained(sqs, queues, collector, schedule)
        elapsed = time.monotonic() - began
        if drained:  # a relay killed after its send left a claimed entry: it is sent again
            wait_settled(env, plan.events, SETTLE_TIMEOUT)
    finally:
        schedule.finish()
        pool.stop()
    time.sleep(1.5)  # a relay duplicate sent just before the stop still arrives
    collector.stop()
    result = _result(env, sqs, queues, collector, keys, pool, len(bodies), elapsed, drained)
    return result, pool, schedule


def _result(
    env: dict[str, str],
    sqs: Any,
    queues: ChaosQueues,
    collector: FollowupCollector,
    keys: Sequence[str],
    pool: WorkerPool,
    messages: int,
    elapsed: float,
    drained: bool,
) -> ChaosResult:
    report = read_report(env, len(keys))
    followups = collector.counts(keys)
    lags = collector.mark_lags(report.pop("sent_at_ms"))
    lag = (lags[len(lags) // 2], lags[len(lags) * 9 // 10]) if lags else (0, 0)
    return ChaosResult(
        messages=messages,
        events=len(keys),
        kills=pool.kills,
        lost=report["lost"],
        duplicate_side_effects=report["duplicate_side_effects"],
        followups_sent=followups["followups_sent"],
        followups_duplicated=followups["followups_duplicated"],
        events_with_two_followups=followups["events_with_two_followups"],
        dlq=queue_depth(sqs, queues.dlq_url),
        outbox_unsent=report["outbox_unsent"],
        elapsed=elapsed,
        drained=drained,
        mark_lag_ms=lag,
        details={**report, **followups},
    )
