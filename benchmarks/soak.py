"""Soak: a million events through the pipeline ceiling on PostgreSQL (not run in CI).

The pipeline of worker_throughput.py (its `pipeline_run`: a `Consumer` on MemorySQS, inline
dispatch, no-op handler, full exactly-once bookkeeping) is run in rounds of --round-events
events until --events events are handled or --minutes have passed, whichever comes first (the
run says which), in this process, on a database of its own (recreated each run). Every
--sample-seconds a sampler thread records this process's RSS (/proc/self/statm), the events
committed over the interval (from the events table's highest primary key), the history rows
(both tables' highest primary keys less what the cleanup deleted: index probes, no count(*)
that would slow the pipeline it measures) and the 1-minute load average.

Targets:
(a) RSS stays within +-10 MB of its value at the end of warm-up (warm-up: the first 60 s or
    the first 10% of the run, whichever is longer);
(b) the pipeline's rate in the rounds that start with >= 1,000,000 history rows is >= 0.9x
    its empty-table rate (the first rounds of the same run, with < ~20,000 rows);
(c) with --with-cleanup, a thread runs `cleanup_history` every --cleanup-every seconds with a
    retention of --retention seconds, so once the run is older than that it deletes the
    soak's own rows as fast as they come (a worker's steady state); the rate in the rounds
    that start after its first deletion is >= 0.8x the empty-table rate.
Round rates are drain time only (as in worker_throughput.py); a sample's events/s is wall time
over the interval, so it includes queueing each round on MemorySQS and reads lower.

    python benchmarks/soak.py [--events 1000000] [--minutes 20] [--concurrency 20]
        [--round-events 2000] [--with-cleanup] [--retention 60] [--cleanup-every 5]
        [--plot /tmp/soak.png] [--csv PATH]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.worker_throughput import BUCKET, pipeline_run, setup_django  # noqa: E402
from s3tasks.emulator import port_open  # noqa: E402

PG_BENCH_DB = "bench_s3tasks_soak"
FULL_HISTORY = 1_000_000  # history rows from which target (b) is measured
EMPTY_ROUNDS = 5  # the first rounds: the empty-table rate
WARMUP_SECONDS, WARMUP_SHARE = 60.0, 0.10
RSS_BAND_MB = 10.0
FULL_RATIO, CLEANUP_RATIO = 0.9, 0.8
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def rss_mb() -> float:
    """This process's resident set size now (not its peak)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_MB


@dataclass(frozen=True)
class Sample:
    seconds: float  # since the soak began
    events: int  # committed since the soak began
    events_per_s: float  # over the interval before this sample
    rss_mb: float
    history_rows: int
    deleted_rows: int
    load_1min: float


@dataclass(frozen=True)
class Round:
    began: float  # seconds since the soak began
    history_rows: int  # when it began
    events: int
    seconds: float  # draining only
    cleaning: bool  # the cleanup had deleted rows when it began


class History:
    """The history tables' size, from their highest primary keys (rows are never updated
    away, only deleted by the cleanup, which counts what it deletes into `deleted`)."""

    def __init__(self) -> None:
        self.deleted = 0

    def inserted(self) -> tuple[int, int]:
        """(events, runs) ever inserted."""
        from django.db.models import Max

        from s3tasks.models import EventRecord, HandlerRun

        events = EventRecord.objects.aggregate(top=Max("pk"))["top"] or 0
        return events, HandlerRun.objects.aggregate(top=Max("pk"))["top"] or 0

    def rows(self) -> int:
        return sum(self.inserted()) - self.deleted

    def counted(self) -> int:
        """The exact count, once at the end (a full scan of both tables)."""
        from s3tasks.models import EventRecord, HandlerRun

        return EventRecord.objects.count() + HandlerRun.objects.count()


class Sampler(threading.Thread):
    """Takes a `Sample` every `every` seconds and prints it as a table row."""

    def __init__(self, every: float, history: History, began: float) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.every, self.history, self.began = every, history, began
        self.samples: list[Sample] = []
        self.stopping = threading.Event()
        self.first_event = history.inserted()[0]

    def start(self) -> None:
        print(f" {'s':>6} | {'events':>9} | events/s | RSS MB | history rows | deleted | load")
        print("-" * 74, flush=True)
        super().start()

    def run(self) -> None:
        from django.db import connection

        try:
            ticks = 1
            while not self.stopping.wait(self.began + ticks * self.every - time.monotonic()):
                self.take()
                ticks += 1
            self.take()  # the last, shorter interval
        finally:
            connection.close()

    def take(self) -> None:
        now = time.monotonic() - self.began
        last = self.samples[-1] if self.samples else Sample(0, 0, 0, 0, 0, 0, 0)
        if now - last.seconds < 1:
            return
        events = self.history.inserted()[0] - self.first_event
        sample = Sample(
            now,
            events,
            (events - last.events) / (now - last.seconds),
            rss_mb(),
            self.history.rows(),
            self.history.deleted,
            os.getloadavg()[0],
        )
        self.samples.append(sample)
        print(
            f" {now:6.0f} | {events:9,d} | {sample.events_per_s:8.0f} | {sample.rss_mb:6.1f} |"
            f" {sample.history_rows:12,d} | {sample.deleted_rows:7,d} | {sample.load_1min:4.2f}",
            flush=True,
        )


class Cleaner(threading.Thread):
    """`cleanup_history(retention)` every `every` seconds, as a worker's cleanup timer would."""

    def __init__(self, retention: float, every: float, batch_size: int, history: History):
        super().__init__(name="soak-cleanup", daemon=True)
        self.retention, self.every, self.batch_size = retention, every, batch_size
        self.history = history
        self.stopping = threading.Event()
        self.passes, self.batches, self.longest_batch = 0, 0, 0.0
        self.errors: list[str] = []

    @property
    def active(self) -> bool:
        return self.history.deleted > 0

    def run(self) -> None:
        from django.db import connection

        from s3tasks.ops.cleanup import cleanup_history

        try:
            while not self.stopping.wait(self.every if self.passes else 0):
                before = self.history.deleted

                def count(report, before=before) -> None:
                    self.history.deleted = before + report.total

                report = cleanup_history(
                    timedelta(seconds=self.retention), batch_size=self.batch_size, on_batch=count
                )
                self.passes += 1
                self.batches += report.batches
                self.longest_batch = max(self.longest_batch, report.longest_batch)
                self.errors += report.errors
        finally:
            connection.close()


def run_rounds(
    args: argparse.Namespace, sqs, began: float, history: History, cleaner: Cleaner | None
) -> tuple[list[Round], str]:
    """Pipeline rounds until --events are handled or --minutes are up; (rounds, why it
    stopped)."""
    deadline = began + args.minutes * 60
    rounds: list[Round] = []
    done = 0
    while done < args.events:
        if time.monotonic() >= deadline:
            return rounds, f"stopped at the time limit ({args.minutes:g} min): {done:,} events"
        rows, cleaning = history.rows(), bool(cleaner and cleaner.active)
        at = time.monotonic() - began
        count = min(args.round_events, args.events - done)
        took, handled = pipeline_run(sqs, f"r{len(rounds)}", count, args.concurrency)
        rounds.append(Round(at, rows, handled, took, cleaning))
        done += handled
    minutes = (time.monotonic() - began) / 60
    return rounds, f"stopped after all {done:,} events ({minutes:.1f} min)"


def rate(rounds: list[Round]) -> float | None:
    seconds = sum(r.seconds for r in rounds)
    return sum(r.events for r in rounds) / seconds if seconds else None


# --- verdicts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    target: str
    value: str
    status: str  # PASS, FAIL, or why there is no figure


def warmup_end(samples: list[Sample]) -> float:
    return max(WARMUP_SECONDS, WARMUP_SHARE * (samples[-1].seconds if samples else 0))


def rss_verdict(samples: list[Sample]) -> Verdict:
    target = f"(a) RSS within +-{RSS_BAND_MB:g} MB after warm-up"
    after = [s for s in samples if s.seconds >= warmup_end(samples)]
    if len(after) < 2:
        return Verdict(target, "-", "n/a: run shorter than warm-up + one sample")
    drift = [s.rss_mb - after[0].rss_mb for s in after]
    worst = max(drift, key=abs)
    value = f"{after[0].rss_mb:.1f} MB at {after[0].seconds:.0f}s, worst {worst:+.1f} MB"
    return Verdict(target, value, "PASS" if abs(worst) <= RSS_BAND_MB else "FAIL")


def ratio_verdict(
    target: str, rounds: list[Round], empty: float, least: float | None, why: str
) -> Verdict:
    """`rounds`' rate over the empty-table rate, against `least` (None: a note, no target)."""
    got = rate(rounds)
    if got is None or not empty:
        return Verdict(target, "-", why)
    value = f"{got:.0f} / {empty:.0f} = {got / empty:.2f} ({len(rounds)} rounds)"
    if least is None:
        return Verdict(target, value, "note")
    return Verdict(target, value, "PASS" if got / empty >= least else "FAIL")


def verdicts(samples: list[Sample], rounds: list[Round], with_cleanup: bool) -> list[Verdict]:
    empty = rate(rounds[:EMPTY_ROUNDS]) or 0.0
    peak = max((r.history_rows for r in rounds), default=0)
    full = [r for r in rounds[EMPTY_ROUNDS:] if r.history_rows >= FULL_HISTORY]
    cleaning = [r for r in rounds[EMPTY_ROUNDS:] if r.cleaning]
    last = rounds[EMPTY_ROUNDS:][-max(1, len(rounds) // 10) :]
    found = [
        rss_verdict(samples),
        ratio_verdict(
            f"(b) >= {FULL_HISTORY:,} history rows vs empty (>= {FULL_RATIO})",
            full,
            empty,
            FULL_RATIO,
            f"not reached: history peaked at {peak:,} rows",
        ),
    ]
    if with_cleanup:
        found.append(
            ratio_verdict(
                f"(c) cleanup deleting beside it vs empty (>= {CLEANUP_RATIO})",
                cleaning,
                empty,
                CLEANUP_RATIO,
                "not reached: the cleanup deleted nothing (run longer than --retention)",
            )
        )
    found.append(ratio_verdict("last 10% of rounds vs empty", last, empty, None, "-"))
    return found


# --- output ----------------------------------------------------------------------------------


def print_summary(rounds, why, found, history, cleaner, loads) -> None:
    empty = rate(rounds[:EMPTY_ROUNDS]) or 0.0
    events = sum(r.events for r in rounds)
    print(f"\n{why}; {len(rounds)} rounds, {events:,} events")
    print(
        f"empty-table rate (first {EMPTY_ROUNDS} rounds, drain time): {empty:.0f} events/s;"
        f" all rounds: {rate(rounds) or 0:.0f} events/s"
    )
    print(f"history rows at the end: {history.rows():,} (tally), {history.counted():,} (counted)")
    if cleaner:
        print(
            f"cleanup: {cleaner.passes} passes, {history.deleted:,} rows deleted in"
            f" {cleaner.batches} batches, longest batch {cleaner.longest_batch * 1000:.0f} ms"
            + (f", errors: {cleaner.errors}" if cleaner.errors else "")
        )
    print(f"load average (1 min): {loads[0]:.2f} before, {loads[1]:.2f} after")
    width = max(len(v.target) for v in found)
    print(f"\n {'target':<{width}} | {'value':<44} | result")
    print("-" * (width + 58))
    for v in found:
        print(f" {v.target:<{width}} | {v.value:<44} | {v.status}")


def write_csv(path: Path, samples: list[Sample]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=[f.name for f in fields(Sample)])
        writer.writeheader()
        writer.writerows(asdict(s) for s in samples)


def plot_rates(axes, samples: list[Sample], rounds: list[Round]) -> None:
    """Events/s of each sample and each round, the empty-table rate and the targets' lines;
    history rows on a second y axis."""
    seconds = [s.seconds for s in samples]
    rates = [r.events / r.seconds for r in rounds]
    axes.scatter([r.began for r in rounds], rates, s=4, color="tab:gray", label="round (drain)")
    axes.plot(seconds, [s.events_per_s for s in samples], marker="o", label="sample (wall time)")
    empty = rate(rounds[:EMPTY_ROUNDS]) or 0.0
    axes.axhline(empty, linestyle="--", color="tab:green", label="empty-table rate")
    axes.axhline(FULL_RATIO * empty, linestyle=":", color="tab:red", label=f"{FULL_RATIO}x")
    cleaning = [r.began for r in rounds if r.cleaning]
    if cleaning:
        label = f"{CLEANUP_RATIO}x"
        axes.axhline(CLEANUP_RATIO * empty, linestyle=":", color="tab:brown", label=label)
        axes.axvline(cleaning[0], color="tab:brown", label="cleanup deleting from here")
    axes.set_ylabel("events/s")
    axes.set_ylim(bottom=0)
    axes.legend(loc="lower left", fontsize="small")
    rows = axes.twinx()
    rows.plot(seconds, [s.history_rows for s in samples], color="tab:purple", alpha=0.5)
    rows.set_ylabel("history rows", color="tab:purple")


def plot_rss(axes, samples: list[Sample]) -> None:
    """RSS of each sample, the end of warm-up and the +-10 MB band after it."""
    axes.plot([s.seconds for s in samples], [s.rss_mb for s in samples], marker="o", color="C1")
    warm = warmup_end(samples)
    axes.axvline(warm, linestyle="--", color="gray", label="end of warm-up")
    after = [s for s in samples if s.seconds >= warm]
    if after:
        low, high = after[0].rss_mb - RSS_BAND_MB, after[0].rss_mb + RSS_BAND_MB
        span = [after[0].seconds, after[-1].seconds]
        axes.fill_between(span, low, high, color="C1", alpha=0.1, label=f"+-{RSS_BAND_MB:g} MB")
    axes.set_ylabel("RSS, MB")
    axes.set_xlabel("seconds")
    axes.legend(loc="lower right", fontsize="small")


def plot(path: Path, samples: list[Sample], rounds: list[Round], title: str) -> None:
    """A PNG: events/s and history rows above, RSS below, on one time axis."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (top, bottom) = pyplot.subplots(2, 1, sharex=True, figsize=(10, 7))
    plot_rates(top, samples, rounds)
    plot_rss(bottom, samples)
    figure.suptitle(title, fontsize="medium")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


# --- the run ---------------------------------------------------------------------------------


def soak(args: argparse.Namespace) -> None:
    from django.db import connection

    from s3tasks.worker.memory_sqs import MemorySQS
    from tests.worker_app.handlers import NOOP
    from tests.worker_support import bind

    name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        bind(NOOP, BUCKET)
        history = History()
        cleaner = None
        if args.with_cleanup:
            cleaner = Cleaner(args.retention, args.cleanup_every, args.batch_size, history)
        sqs = MemorySQS()
        pipeline_run(sqs, "warmup", 50, args.concurrency)
        loads = [os.getloadavg()[0]]
        began = time.monotonic()
        sampler = Sampler(args.sample_seconds, history, began)
        sampler.start()
        if cleaner:
            cleaner.start()
        try:
            rounds, why = run_rounds(args, sqs, began, history, cleaner)
        finally:
            for thread in (t for t in (sampler, cleaner) if t):
                thread.stopping.set()
                thread.join()
        loads.append(os.getloadavg()[0])
        found = verdicts(sampler.samples, rounds, args.with_cleanup)
        print_summary(rounds, why, found, history, cleaner, loads)
        write_csv(args.csv or args.plot.with_suffix(".csv"), sampler.samples)
        mode = f", cleanup (retention {args.retention:g} s)" if cleaner else ""
        title = f"soak, PostgreSQL, {args.concurrency} threads{mode}: {why}"
        plot(args.plot, sampler.samples, rounds, title)
        print(f"\nsamples: {args.csv or args.plot.with_suffix('.csv')}; plot: {args.plot}")
    finally:
        connection.close()
        connection.creation.destroy_test_db(name, verbosity=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="stop after these")
    parser.add_argument("--minutes", type=float, default=20.0, help="or at this time, if earlier")
    parser.add_argument("--concurrency", type=int, default=20, help="worker threads")
    parser.add_argument("--round-events", type=int, default=2000, help="events queued at once")
    parser.add_argument("--sample-seconds", type=float, default=10.0, help="between samples")
    parser.add_argument("--with-cleanup", action="store_true", help="target (c)")
    parser.add_argument("--retention", type=float, default=60.0, help="seconds, with cleanup")
    parser.add_argument("--cleanup-every", type=float, default=5.0, help="seconds between passes")
    parser.add_argument("--batch-size", type=int, default=1000, help="cleanup batch size")
    parser.add_argument("--plot", type=Path, default=Path("/tmp/soak.png"), help="PNG to write")
    parser.add_argument("--csv", type=Path, help="samples (default: --plot with .csv)")
    parser.add_argument("--database", default=PG_BENCH_DB, help="PostgreSQL database to use")
    args = parser.parse_args()
    if not port_open(5432):
        raise SystemExit("PostgreSQL not reachable on 127.0.0.1:5432")
    setup_django(
        {
            "S3TASKS_DB": "postgres",
            "S3TASKS_CONN_MAX_AGE": "60",  # what docs/worker.md recommends for workers
            "DJANGO_DEBUG": "0",  # as in production: no query log (it would grow the RSS)
            "S3TASKS_DEV": "1",  # the example project's throwaway SECRET_KEY
            "S3TASKS_PG_TEST_NAME": args.database,
        }
    )
    cleanup = f"; cleanup every {args.cleanup_every:g} s, retention {args.retention:g} s"
    print(
        f"soak: {args.events:,} events or {args.minutes:g} minutes, whichever comes first;"
        f" {args.concurrency} threads, rounds of {args.round_events}, database {args.database}"
        + (cleanup if args.with_cleanup else "")
    )
    soak(args)


if __name__ == "__main__":
    main()
