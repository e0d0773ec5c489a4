"""Mirror `@on_s3_event` declarations into `NotificationRule`/`HandlerBinding` rows.

What the admin set on a code rule (the rule's and the binding's enabled) survives any
decorator change: rows are matched by handler and bucket and only the declared details are
updated (`s3tasks.rules.code_binding_plan`). `migrate` and `manage.py s3tasks_bindings` reconcile
fully (create, update, remove); a starting worker only adds what its code declares and the
database lacks, because during a rolling deploy another release's code may be the newer one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import IntegrityError, transaction

from s3tasks.conf import get_settings
from s3tasks.models import Bucket, HandlerBinding, NotificationRule, Queue, Topic
from s3tasks.rules.code_binding_plan import (
    ACTIONS,
    Action,
    BindingChange,
    BindingsPlan,
    Declaration,
    StoredRule,
    declarations_of,
    plan_bindings,
)
from s3tasks.rules.registry import HandlerRegistry, default_registry

logger = logging.getLogger(__name__)

RULE_DETAILS = frozenset({"events", "prefix", "suffix", "queue", "topic", "location"})
BINDING_DETAILS = frozenset({"celery_queue", "access"})
_ATTEMPTS = 3
T = TypeVar("T")


@dataclass(frozen=True)
class CodeBindingSync:
    """What a reconcile did; `not_declared`/`differing` count rows it left as they were."""

    created: int
    updated: int
    removed: int
    not_declared: int = 0
    differing: int = 0


# --- reading and writing rows ---------------------------------------------------------------


def read_stored_rules() -> tuple[list[StoredRule], set[str]]:
    """Code-declared rule rows, and every code key in use."""

    rules = (
        NotificationRule.objects.filter(declared_in_code=True)
        .select_related("bucket", "queue", "topic")
        .prefetch_related("bindings")
    )
    stored = [
        StoredRule(rule.pk, rule.code_key or "", rule.enabled, _row_declaration(rule))
        for rule in rules
    ]
    keys = NotificationRule.objects.exclude(code_key=None).values_list("code_key", flat=True)
    return stored, set(keys)


def _row_declaration(rule: Any) -> Declaration | None:
    binding = next((b for b in rule.bindings.all() if b.declared_in_code), None)
    if binding is None:
        return None
    return Declaration(
        handler_name=binding.handler_name,
        bucket=rule.bucket.name,
        events=tuple(str(e) for e in rule.events),
        prefix=rule.prefix,
        suffix=rule.suffix,
        queue=rule.queue.name if rule.queue_id else "",
        topic=rule.topic.name if rule.topic_id else "",
        celery_queue=binding.celery_queue,
        access=binding.access,
        location=rule.code_location,
    )


def compute_bindings_plan(registry: HandlerRegistry | None = None) -> BindingsPlan:
    """The plan that makes the rows match `registry` (default: this process's handlers)."""
    registry = registry if registry is not None else default_registry
    wanted = declarations_of(registry, get_settings().DEFAULT_QUEUE)
    stored, keys = read_stored_rules()
    return plan_bindings(wanted, stored, keys)


def apply_bindings_plan(
    plan: BindingsPlan, actions: Collection[Action] = ACTIONS
) -> CodeBindingSync:
    """Carry out the plan's steps of the given kinds; unchanged rows are not written."""
    done = dict.fromkeys(ACTIONS, 0)
    steps: dict[Action, Callable[[BindingChange], None]] = {
        "create": _create,
        "update": _update,
        "remove": _remove,
    }
    for change in plan.changes:
        if change.action in actions:
            steps[change.action](change)
            logger.info("s3tasks: code bindings: %s", change.describe())
            done[change.action] += 1
    return CodeBindingSync(done["create"], done["update"], done["remove"])


def _rule_values(declaration: Declaration) -> dict[str, Any]:

    topic = Topic.objects.get_or_create(name=declaration.topic)[0] if declaration.topic else None
    queue = Queue.objects.get_or_create(name=declaration.queue)[0] if declaration.queue else None
    return {
        "name": declaration.rule_name,
        "events": list(declaration.events),
        "prefix": declaration.prefix,
        "suffix": declaration.suffix,
        "topic": topic,
        "queue": queue,
        "code_location": declaration.location,
    }


def _create(change: BindingChange) -> None:

    declaration = change.wanted
    assert declaration is not None
    rule = NotificationRule.objects.create(
        code_key=change.key,
        declared_in_code=True,
        bucket=Bucket.objects.get_or_create(name=declaration.bucket)[0],
        **_rule_values(declaration),
    )
    HandlerBinding.objects.create(
        rule=rule,
        handler_name=declaration.handler_name,
        celery_queue=declaration.celery_queue,
        access=declaration.access,
        declared_in_code=True,
    )


def _update(change: BindingChange) -> None:
    """Write only the declared details; the enabled flags stay as they are."""

    declaration, stored = change.wanted, change.stored
    assert declaration is not None and stored is not None
    if RULE_DETAILS.intersection(change.changed):
        rule = NotificationRule.objects.get(pk=stored.pk)
        values = _rule_values(declaration)
        for field, value in values.items():
            setattr(rule, field, value)
        rule.save(update_fields=[*values, "updated_at"])
    if BINDING_DETAILS.intersection(change.changed):
        binding = HandlerBinding.objects.get(
            rule_id=stored.pk, handler_name=declaration.handler_name, declared_in_code=True
        )
        binding.celery_queue, binding.access = declaration.celery_queue, declaration.access
        binding.save(update_fields=["celery_queue", "access"])


def _remove(change: BindingChange) -> None:

    assert change.stored is not None
    NotificationRule.objects.filter(pk=change.stored.pk).delete()


# --- the three ways in: migrate/command, worker start ---------------------------------------


def sync_code_bindings(registry: HandlerRegistry | None = None) -> CodeBindingSync:
    """Reconcile fully (create, update, remove): `migrate` and `manage.py s3tasks_bindings`."""

    def reconcile() -> CodeBindingSync:
        return apply_bindings_plan(compute_bindings_plan(registry))

    return _retrying(reconcile)


def add_missing_code_bindings(registry: HandlerRegistry | None = None) -> CodeBindingSync:
    """What a starting worker does: create the rules its code declares and the database
    lacks; change and remove nothing, and say in one line what it left alone."""

    def add() -> tuple[BindingsPlan, CodeBindingSync]:
        plan = compute_bindings_plan(registry)
        return plan, apply_bindings_plan(plan, actions=("create",))

    plan, result = _retrying(add)
    unknown, differing = plan.of("remove"), plan.of("update")
    if unknown or differing:
        logger.info(
            "s3tasks: code bindings left as they are: %d rule(s) this code does not declare%s "
            "and %d that differ from its declarations%s (another release's? `manage.py "
            "s3tasks_bindings --dry-run` shows them; `migrate` or that command reconciles)",
            len(unknown),
            _names(unknown),
            len(differing),
            _names(differing),
        )
    return CodeBindingSync(
        result.created, 0, 0, not_declared=len(unknown), differing=len(differing)
    )


def _names(changes: Sequence[BindingChange], most: int = 5) -> str:
    if not changes:
        return ""
    shown = ", ".join(c.subject for c in changes[:most])
    more = f", +{len(changes) - most} more" if len(changes) > most else ""
    return f" ({shown}{more})"


def _retrying(work: Callable[[], T]) -> T:
    """Run `work` in a transaction; if another process inserted the same code key first
    (two workers starting together), read again and redo it."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            with transaction.atomic():
                return work()
        except IntegrityError:
            if attempt == _ATTEMPTS:
                raise
            logger.info("s3tasks: code bindings changed by another process meanwhile; retrying")
    raise AssertionError("unreachable")
