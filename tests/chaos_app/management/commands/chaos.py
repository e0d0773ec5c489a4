"""`manage.py chaos setup|report`: prepare and inspect a chaos run's database (tests only).

`setup` binds the side-effect handler to the events bucket and creates the side effects'
parent row; `report` prints, as JSON, what the database says about the run's events.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from django.core.management.base import BaseCommand
from django.db.models import Count

from project.demo.models import ImportedRow
from s3tasks.models import Bucket, HandlerBinding, HandlerRun, NotificationRule, OutboxMessage
from tests.chaos_app.handlers import SIDE_EFFECT, side_effects_file
from tests.chaos_app.harness import BUCKET, PREFIX, event_keys


class Command(BaseCommand):
    help = "Set up (`setup`) or report on (`report`) the database of a chaos run."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("action", choices=["setup", "report"])
        parser.add_argument("--bucket", default=BUCKET, help="The events' bucket.")
        parser.add_argument("--events", type=int, default=0, help="Events sent (report).")
        parser.add_argument("--prefix", default=PREFIX, help="The events' key prefix.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "setup":
            setup(options["bucket"])
            return
        keys = event_keys(options["events"], options["prefix"])
        self.stdout.write(json.dumps(report(options["bucket"], keys)))


def setup(bucket: str) -> None:
    side_effects_file()
    row, _ = Bucket.objects.get_or_create(name=bucket)
    if not HandlerBinding.objects.filter(rule__bucket=row, handler_name=SIDE_EFFECT).exists():
        rule = NotificationRule.objects.create(bucket=row, events=["s3:ObjectCreated:*"])
        HandlerBinding.objects.create(rule=rule, handler_name=SIDE_EFFECT)


def report(bucket: str, keys: list[str]) -> dict[str, Any]:
    """Lost events, duplicate side effects, run states and the outbox, for `keys`."""
    runs = HandlerRun.objects.filter(event__bucket=bucket, handler_name=SIDE_EFFECT)
    succeeded = set(runs.filter(state="succeeded").values_list("event__key", flat=True))
    rows = Counter(
        data.get("key")
        for data in ImportedRow.objects.filter(file=side_effects_file()).values_list(
            "data", flat=True
        )
        if data.get("bucket") == bucket
    )
    lost = [k for k in keys if k not in succeeded or rows[k] == 0]
    states = dict(runs.values_list("state").annotate(n=Count("id")).values_list("state", "n"))
    outbox = OutboxMessage.objects.all()
    return {
        "events": len(keys),
        "lost": len(lost),
        "lost_keys": lost[:20],
        "duplicate_side_effects": sum(n - 1 for k, n in rows.items() if n > 1),
        "events_with_duplicate_side_effects": sum(1 for n in rows.values() if n > 1),
        "run_states": states,
        "outbox_total": outbox.count(),
        "outbox_unsent": outbox.filter(sent_at__isnull=True).count(),
        "outbox_max_attempts": max(outbox.values_list("attempts", flat=True), default=0),
        "sent_at_ms": {  # when each entry was marked sent, by idempotency key
            str(key): round(sent.timestamp() * 1000)
            for key, sent in outbox.filter(sent_at__isnull=False).values_list(
                "idempotency_key", "sent_at"
            )
        },
    }
