"""What `s3tasks_demo` prints: progress lines as things happen, tables at the end (rich)."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from project.demo.models import ImportedFile
from project.demo.tasks import REPORTS_BUCKET
from s3tasks.models import HandlerRun, OutboxMessage, RunState

FINISHED = (RunState.SUCCEEDED, RunState.FAILED)
MARKS = {RunState.SUCCEEDED: "[green]✔[/]", RunState.FAILED: "[red]✘[/]"}


def console() -> Console:
    # Piped output (CI, tests) gets rich's 80 columns by default: too narrow for the tables.
    width = None if sys.stdout.isatty() else 120
    return Console(highlight=False, soft_wrap=True, width=width)


def short_name(handler_name: str) -> str:
    return handler_name.rsplit(".", 1)[-1]


def banner(out: Console, endpoint: str, database: str) -> None:
    out.rule("[bold]s3tasks demo[/]: S3 → SQS → worker → handlers → follow-ups")
    out.print(f"  AWS emulator (moto) : [cyan]{endpoint}[/]")
    out.print(f"  database (SQLite)   : [cyan]{database}[/]")


def step(out: Console, text: str) -> None:
    out.print(f"[bold blue]•[/] {text}")


def sync_output(out: Console, lines: list[str]) -> None:
    step(out, "Synced to AWS ([italic]manage.py sync_notifications[/]):")
    for line in lines[:25]:
        out.print(f"    [dim]{line}[/]")
    if len(lines) > 25:
        out.print(f"    [dim]… {len(lines) - 25} more line(s)[/]")


def upload(out: Console, bucket: str, key: str) -> None:
    out.print(f"[yellow]⇧ uploaded[/] s3://{bucket}/{key}")


def removal(out: Console, bucket: str, key: str) -> None:
    out.print(f"[yellow]✂ removed[/]  s3://{bucket}/{key}")


class Watcher:
    """Prints each handler run once it finishes, each follow-up once sent, each report once
    it appears; remembers which (handler, key) runs succeeded."""

    def __init__(self, out: Console) -> None:
        self.console = out
        self.seen_runs: set[int] = set()
        self.seen_outbox: set[int] = set()
        self.seen_reports: set[str] = set()
        self.done: dict[str, set[str]] = {}

    def poll(self) -> None:
        runs = HandlerRun.objects.filter(state__in=FINISHED).exclude(pk__in=self.seen_runs)
        for run in runs.select_related("event").order_by("finished_at", "pk"):
            self.seen_runs.add(run.pk)
            self._print_run(run)
        sent = OutboxMessage.objects.filter(sent_at__isnull=False).exclude(pk__in=self.seen_outbox)
        for message in sent.order_by("sent_at", "pk"):
            self.seen_outbox.add(message.pk)
            args = ", ".join(repr(a) for a in message.payload.get("args", []))
            self.console.print(f"  [magenta]↪ follow-up[/] {message.target}({args})")

    def _print_run(self, run: HandlerRun) -> None:
        name = short_name(run.handler_name)
        if run.state == RunState.SUCCEEDED:
            self.done.setdefault(name, set()).add(run.event.key)
        detail = run.result_summary if run.state == RunState.SUCCEEDED else run.error
        took = f"{run.duration_ms:.0f} ms" if run.duration_ms is not None else ""
        self.console.print(
            f"{MARKS.get(run.state, '?')} [bold]{name}[/] {run.event.event_name} "
            f"{run.event.key} [dim]{took}[/] → {detail}"
        )

    def reports(self, present: set[str]) -> None:
        for key in sorted(present - self.seen_reports):
            self.console.print(f"  [cyan]📄 report[/] s3://{REPORTS_BUCKET}/{key}")
        for key in sorted(self.seen_reports - present):
            self.console.print(f"  [cyan]🗑 report removed[/] s3://{REPORTS_BUCKET}/{key}")
        self.seen_reports = set(present)

    def succeeded(self, handler: str) -> set[str]:
        return self.done.get(handler, set())


def summary(out: Console, elapsed: float) -> None:
    runs = Table(title="Handler runs", title_justify="left")
    for column in ("handler", "event", "key", "state", "attempts", "ms", "result"):
        runs.add_column(column)
    for run in HandlerRun.objects.select_related("event").order_by("created_at", "pk"):
        runs.add_row(
            short_name(run.handler_name),
            run.event.event_name,
            run.event.key,
            run.state,
            str(run.attempts),
            f"{run.duration_ms:.0f}" if run.duration_ms is not None else "",
            run.result_summary or run.error,
        )
    files = Table(title="Imported files", title_justify="left")
    for column in ("key", "rows", "status", "summary report"):
        files.add_column(column)
    for imported in ImportedFile.objects.order_by("key"):
        files.add_row(
            imported.key,
            str(imported.rows),
            "removed" if imported.removed else "imported",
            f"s3://{REPORTS_BUCKET}/{imported.summary_key}" if imported.summary_key else "—",
        )
    out.print()
    out.print(runs)
    out.print(files)
    sent = OutboxMessage.objects.filter(sent_at__isnull=False).count()
    out.print(
        f"[bold]Summary:[/] {HandlerRun.objects.filter(state=RunState.SUCCEEDED).count()} "
        f"handler run(s) succeeded, {HandlerRun.objects.filter(state=RunState.FAILED).count()} "
        f"failed, {sent} follow-up command(s) sent, in {elapsed:.1f} s."
    )


def failure(out: Console, missing: list[str], data_dir: Path) -> None:
    out.print("[bold red]The loop did not complete in time.[/] Still waiting for:")
    for piece in missing:
        out.print(f"  - {piece}")
    out.print(f"Logs: {data_dir / 'worker.log'}, {data_dir / 'moto.log'}")


def keep_running(out: Console, web_port: int, user: tuple[str, str], endpoint: str) -> None:
    out.rule("Still running: Ctrl-C to stop")
    login = f"user [bold]{user[0]}[/], password [bold]{user[1]}[/]"
    out.print(f"  admin        : [cyan]http://127.0.0.1:{web_port}/admin/[/]  ({login})")
    out.print(f"  upload page  : [cyan]http://127.0.0.1:{web_port}/demo/[/]")
    out.print(f"  AWS emulator : [cyan]{endpoint}[/] (e.g. aws --endpoint-url {endpoint} s3 ls)")
    out.print("  New uploads show up below as the worker handles them.")
