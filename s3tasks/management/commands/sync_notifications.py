"""`manage.py sync_notifications`: show the plan that makes AWS match the models, then apply it.

Exit codes: 0 = in sync (or applied), 1 = error (including a plan blocked by resources s3tasks
did not make: `--adopt` takes them over), 2 = `--dry-run` found pending changes.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from s3tasks.exceptions import S3TasksError
from s3tasks.logs import add_log_format_argument, configure_command_logging
from s3tasks.provisioning import service
from s3tasks.provisioning.apply import blocked_message
from s3tasks.provisioning.text import render_plan

EXIT_CHANGES_PENDING = 2


class Command(BaseCommand):
    help = (
        "Make AWS (buckets' notification entries, SQS queues, SNS topics, subscriptions, "
        "policies, CORS) match the s3tasks models. Prints the plan first, each step marked "
        "[ours], [adopted] or [foreign]; entries, statements and resources s3tasks did not "
        "make are never changed (an existing one the models need stops the sync until "
        "--adopt). Exit codes: 0 = in sync or applied, 1 = error or blocked, 2 = changes "
        "pending (--dry-run)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Print the plan and change nothing; exit 2 when changes are pending (CI).",
        )
        parser.add_argument(
            "--bucket",
            action="append",
            dest="buckets",
            metavar="NAME",
            help="Only this bucket and the queues/topics it delivers to (repeatable).",
        )
        parser.add_argument(
            "--prune",
            action="store_true",
            help="Also remove entries, subscriptions, queues and topics that s3tasks made and "
            "that are no longer in the models (without it they are only reported); adopted "
            "ones are released (s3tasks' statements removed, the resource kept).",
        )
        parser.add_argument(
            "--adopt",
            action="store_true",
            help="Take over existing queues, topics, subscriptions, notification entries and "
            "policy statements that the models need but s3tasks did not make (shown as "
            "[adopted]); sync then sets only what the models set explicitly and keeps the "
            "rest. Without it such resources block the sync.",
        )
        parser.add_argument(
            "--format",
            choices=("text", "json"),
            default="text",
            help="Plan output: readable text (default) or JSON for machines.",
        )
        parser.add_argument(
            "--print-iam-policy",
            action="store_true",
            help="Print the least-privilege IAM policies (worker/Lambda role and sync "
            "operator) as JSON and exit.",
        )
        parser.add_argument(
            "--publish-target",
            action="append",
            default=[],
            metavar="ARN",
            help="With --print-iam-policy: an SNS topic/SQS queue ARN handlers publish "
            "follow-up commands to (repeatable).",
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
        configure_command_logging(options["verbosity"], options["log_format"])
        try:
            if options["print_iam_policy"]:
                policies = service.iam_policies(
                    options["buckets"], publish_targets=options["publish_target"]
                )
                self.stdout.write(json.dumps(policies, indent=2))
                return
            plan = service.compute_plan(
                options["buckets"], prune=options["prune"], adopt=options["adopt"]
            )
        except S3TasksError as exc:
            raise CommandError(str(exc)) from exc
        self._show(plan, options["format"])
        if plan.blocked:
            raise CommandError(blocked_message(plan))
        if options["dry_run"]:
            if plan.has_changes:
                raise CommandError(
                    "changes pending; --dry-run changed nothing", returncode=EXIT_CHANGES_PENDING
                )
            return
        if plan.has_changes and not self._confirmed(plan, options):
            raise CommandError("Aborted: nothing was changed.")
        result = service.apply_plan(plan)
        if not result.ok:
            raise CommandError(
                f"Sync stopped after {len(result.applied)} of {len(plan.changes)} change(s): "
                f"{result.error}"
            )
        if options["format"] == "text" and plan.has_changes:
            self.stdout.write(self.style.SUCCESS(f"Applied {len(result.applied)} change(s)."))

    def _confirmed(self, plan: Any, options: dict[str, Any]) -> bool:
        if not options["interactive"] or not sys.stdin.isatty():
            return True
        answer = input(f"Apply these {len(plan.changes)} change(s)? [y/N] ")
        return answer.strip().lower() in ("y", "yes")

    def _show(self, plan: Any, fmt: str) -> None:
        if fmt == "json":
            self.stdout.write(json.dumps(plan.to_dict(), indent=2, default=str))
            return

        self.stdout.write(render_plan(plan, color=self.stdout.isatty()))
