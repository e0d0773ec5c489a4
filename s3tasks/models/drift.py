"""Edits that sync has not applied yet, counted on the bucket, queue or topic they belong to.

Each save, delete or bulk update that changes what sync writes to AWS (a model's
`synced_fields`) adds one to `pending_changes` of the row whose sync applies it: a rule's
bucket, a subscription's topic and queue, a bucket's, queue's or topic's own row. A sync that
succeeds subtracts the count it saw before planning (`provisioning.status`), so an edit made
while a sync runs stays pending. Handler bindings are not counted: they change routing only,
which workers reload by themselves (the rules version), and sync has nothing to apply.

Receivers are connected in `S3TasksConfig.ready()`; bulk `update()` skips signals, so
`ConfigQuerySet.update()` calls `note_bulk_update()` itself.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from django.db import models

# (model, primary key) of a row that has a `pending_changes` counter.
Target = tuple[type[models.Model], Any]


def is_tracked(model: type[models.Model]) -> bool:
    return bool(getattr(model, "synced_fields", ()))


def _attnames(model: type[models.Model], names: tuple[str, ...]) -> list[str]:
    return [model._meta.get_field(name).attname for name in names]


def _owners(model: type[models.Model], pk: Any, values: dict[str, Any]) -> list[Target]:
    """Whose counter an edit of these values adds to: the row itself for a bucket, queue or
    topic; the rows its `synced_owners` foreign keys point at for a rule or subscription."""
    if not model.synced_owners:
        return [(model, pk)]
    owners = []
    for name in model.synced_owners:
        field = model._meta.get_field(name)
        owners.append((field.related_model, values.get(field.attname)))
    return owners


def add_pending_changes(targets: Counter[Target]) -> None:
    """Add each count to its row's `pending_changes` (rows already deleted are skipped)."""
    grouped: dict[tuple[type[models.Model], int], list[Any]] = defaultdict(list)
    for (model, pk), count in targets.items():
        if pk is not None and count:
            grouped[model, count].append(pk)
    for (model, count), pks in grouped.items():
        # The base update: a counter does not change routing (no rules-version bump).
        models.QuerySet.update(
            model.objects.filter(pk__in=pks), pending_changes=models.F("pending_changes") + count
        )


def note_save(
    sender: type[models.Model],
    instance: models.Model,
    raw: bool = False,
    update_fields: Any = None,
    **kwargs: Any,
) -> None:
    """`pre_save`: count the save if it changes a synced field (compared with the stored row)."""
    if raw or not is_tracked(sender):
        return
    names = sender.synced_fields
    fields = _attnames(sender, names)
    if update_fields is not None and not set(update_fields) & {*names, *fields}:
        return
    own_counter = not sender.synced_owners
    stored = None
    if instance.pk is not None:
        columns = [*fields, "pending_changes"] if own_counter else fields
        stored = sender.objects.filter(pk=instance.pk).values(*columns).first()
    if stored is None:
        if not own_counter:
            add_pending_changes(Counter(set(_owners(sender, instance.pk, _values(instance)))))
        return  # a new bucket, queue or topic: "Never synced" already says it all
    before = {name: stored[name] for name in fields}
    after = _values(instance)
    changed = before != after
    if own_counter and update_fields is None:
        # The save writes every column: carry the stored count (which other edits may have
        # raised since this instance was loaded) instead of overwriting it with a stale one.
        instance.pending_changes = stored["pending_changes"] + changed
        return
    if changed:
        owners = set(_owners(sender, instance.pk, after)) | set(
            _owners(sender, instance.pk, before)
        )
        add_pending_changes(Counter(owners))


def _values(instance: models.Model) -> dict[str, Any]:
    model = type(instance)
    return {name: getattr(instance, name) for name in _attnames(model, model.synced_fields)}


def note_delete(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    """`post_delete`: a deleted rule or subscription is a change of the rows it belonged to."""
    if not is_tracked(sender) or not sender.synced_owners:
        return
    values = {name: getattr(instance, name) for name in _attnames(sender, sender.synced_owners)}
    add_pending_changes(Counter(set(_owners(sender, instance.pk, values))))


def _holding(model: type[models.Model], values: dict[str, Any]) -> models.Q:
    """Rows whose fields already hold `values`. A None is SQL NULL, as `update()` stores it;
    `field=None` would mean JSON null for a JSONField (a lookup Django 6.1 deprecates)."""
    holding = models.Q()
    for name, value in values.items():
        if value is None and model._meta.get_field(name).null:
            holding &= models.Q(**{f"{name}__isnull": True})
        else:
            holding &= models.Q(**{name: value})
    return holding


def note_bulk_update(queryset: models.QuerySet, values: dict[str, Any]) -> Counter[Target]:
    """What a bulk `update(**values)` of `queryset` will change; call before updating, then
    pass the result to `add_pending_changes` once the update has happened."""
    model = queryset.model
    if not is_tracked(model):
        return Counter()
    synced = {
        model._meta.get_field(key).name: value
        for key, value in values.items()
        if model._meta.get_field(key).name in model.synced_fields
    }
    if not synced:
        return Counter()
    changing = queryset.exclude(_holding(model, synced))  # those change nothing
    if not model.synced_owners:
        return Counter((model, pk) for pk in changing.values_list("pk", flat=True))
    owner_fields = _attnames(model, model.synced_owners)
    counts: Counter[Target] = Counter()
    for row in changing.values(*owner_fields):
        owners = set(_owners(model, None, row))
        new_values = {**row}
        for name in model.synced_owners:
            new = synced.get(name)
            if new is None or hasattr(new, "resolve_expression"):
                continue  # owner unchanged, or an expression (bulk_update): not knowable here
            field = model._meta.get_field(name)
            new_values[field.attname] = new.pk if isinstance(new, models.Model) else new
        owners |= set(_owners(model, None, new_values))
        counts.update(owners)
    return counts
