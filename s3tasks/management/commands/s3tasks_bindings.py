"""`manage.py s3tasks_bindings`: show, then make, the rule rows match `@on_s3_event` code.

`migrate` does the same after applying migrations; this command shows the plan first and can
run on its own (e.g. after a rolling deploy). Exit codes: 0 = in sync (or applied), 1 = error,
2 = `--dry-run` found pending changes.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from s3tasks.logs import add_log_format_argument, configure_command_logging
from s3tasks.rules.code_bindings import compute_bindings_plan, sync_code_bindings

EXIT_CHANGES_PENDING = 2


class Command(BaseCommand):
    help = (
        "Reconcile the rules declared in code (@on_s3_event) with the database: create the "
        "missing ones, update those whose decorator changed (keeping what the admin set: "
        "enabled, binding options) and remove those no longer in this code. Prints the plan "
        "first. `migrate` does the same; a starting sqs_worker only adds missing rules. Exit "
        "code with --dry-run: 0 = in sync, 2 = changes pending."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Print the plan and change nothing; exit 2 when changes are pending (CI).",
        )
        parser.add_argument(
            "--no-input",
            "--noinput",
            action="store_false",
            dest="interactive",
            help="Apply without asking for confirmation (the default when stdin is not a TTY).",
        )
        add_log_format_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        from django.db import DatabaseError

        configure_command_logging(options["verbosity"], options["log_format"])

        try:
            plan = compute_bindings_plan()
        except DatabaseError as exc:
            raise CommandError(f"Cannot read the rules ({exc}); run `manage.py migrate` first.")
        self.stdout.write(plan.summary())
        for change in plan.changes:
            self.stdout.write(f"  {change.describe()}")
        if options["dry_run"]:
            if plan.has_changes:
                raise CommandError(
                    "changes pending; --dry-run changed nothing", returncode=EXIT_CHANGES_PENDING
                )
            return
        if not plan.has_changes:
            self.stdout.write("Nothing to do: the rules match the code.")
            return
        if not self._confirmed(len(plan.changes), options):
            raise CommandError("Aborted: nothing was changed.")
        # Recomputed inside the transaction, so what is applied matches the current rows.
        done = sync_code_bindings()
        self.stdout.write(
            self.style.SUCCESS(
                f"Applied: {done.created} created, {done.updated} updated, {done.removed} removed."
            )
        )

    def _confirmed(self, count: int, options: dict[str, Any]) -> bool:
        if not options["interactive"] or not sys.stdin.isatty():
            return True
        answer = input(f"Apply these {count} change(s)? [y/N] ")
        return answer.strip().lower() in ("y", "yes")
