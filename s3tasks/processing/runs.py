"""Idempotent bookkeeping: one `EventRecord` per dedup key, one `HandlerRun` per handler.

Rows are written per batch: one `INSERT … ON CONFLICT DO NOTHING RETURNING` for the events of a
batch and one for their runs (PostgreSQL and SQLite ≥ 3.35), then one SELECT for the rows that
already existed. Two workers racing on the same event both insert; the database lets one win
and the other skips the row and reads the winner's (on PostgreSQL the loser's INSERT waits until
the winner's transaction ends). Rows are inserted in key order so that two overlapping batches
take their locks in the same order and cannot deadlock. This is what makes handling
exactly-once.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache, reduce
from operator import or_
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from django.conf import settings
from django.db import IntegrityError, connections, models, router, transaction
from django.db.models import Q
from django.utils import timezone

from s3tasks.events import S3Event
from s3tasks.models import EventRecord, HandlerRun

M = TypeVar("M", bound=models.Model)

INSERT_CHUNK = 500  # rows per INSERT: well under SQLite's and PostgreSQL's parameter limits

# (EventRecord id, handler name): the identity of a run
RunKey = tuple[int, str]

# Every field of a run but its id: what `ensure_runs` reads of the runs that existed.
RUN_FIELDS = [f.name for f in HandlerRun._meta.concrete_fields if not f.primary_key]


# --- inserting rows that may already exist -------------------------------------------------


def insert_missing(objs: Sequence[M], unique: tuple[str, ...]) -> list[M]:
    """Insert `objs`, skipping those whose `unique` fields match an existing row.

    Returns the objects this call inserted, with their primary keys set. The rows it inserted
    stay locked by the caller's transaction until it ends; a racing transaction inserting the
    same key waits for that (PostgreSQL) or for the database's write lock (SQLite).
    """
    if not objs:
        return []
    model = type(objs[0])
    alias = router.db_for_write(model)
    connection = connections[alias]
    ordered = sorted(objs, key=lambda obj: _unique_value(obj, unique))
    if connection.vendor in ("postgresql", "sqlite") and (
        connection.features.can_return_rows_from_bulk_insert
    ):
        inserted = []
        for start in range(0, len(ordered), INSERT_CHUNK):
            chunk = ordered[start : start + INSERT_CHUNK]
            inserted += _insert_returning(connection, chunk, unique)
    else:  # other databases: one savepoint per row, the portable way to skip a duplicate
        inserted = [obj for obj in ordered if _insert_one(obj, alias)]
    for obj in inserted:
        obj._state.adding = False
        obj._state.db = alias
    return inserted


def _unique_value(obj: models.Model, unique: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(getattr(obj, obj._meta.get_field(name).attname) for name in unique)


def _insert_returning(connection: Any, objs: Sequence[M], unique: tuple[str, ...]) -> list[M]:
    meta = objs[0]._meta
    quote = connection.ops.quote_name
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    unique_columns = ", ".join(quote(meta.get_field(name).column) for name in unique)
    source, params = _json_rows(connection, fields, objs, saving=False) or _row_source(
        connection, fields, _prepared(connection, fields, objs, saving=False), typed=False
    )
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
        f"{source} ON CONFLICT ({unique_columns}) DO NOTHING "
        f"RETURNING {quote(meta.pk.column)}, {unique_columns}"
    )
    by_key = {_unique_value(obj, unique): obj for obj in objs}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        returned = cursor.fetchall()
    inserted = []
    for pk, *key in returned:
        obj = by_key[tuple(key)]
        obj.pk = pk
        inserted.append(obj)
    return inserted


def insert_and_find(
    objs: Sequence[M], unique: tuple[str, ...], fields: Sequence[str], *, lock: bool = False
) -> tuple[list[M], list[M]] | None:
    """PostgreSQL, in one statement: insert `objs` whose `unique` fields match no row, and read
    `fields` (the unique ones included) of the rows that do, with `lock` `FOR UPDATE` in id
    order. Returns (the objects inserted, pk set; the rows found), or None where one
    statement cannot do it (another database; more rows than one INSERT takes): use
    `insert_missing` and a SELECT there.

    A redelivered batch thus costs the statements a new one does. A row that a concurrent
    transaction inserted while this statement waited for it is in neither list (the
    statement's snapshot predates it): callers look up what is missing, as they would after
    `insert_missing`.
    """
    if not objs or len(objs) > INSERT_CHUNK:
        return None
    model = type(objs[0])
    alias = router.db_for_write(model)
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return None
    meta = model._meta
    quote = connection.ops.quote_name
    ordered = sorted(objs, key=lambda obj: _unique_value(obj, unique))
    keys = [_unique_value(obj, unique) for obj in ordered]
    insert = [f for f in meta.concrete_fields if not f.primary_key]
    source, params = _json_rows(connection, insert, ordered, saving=False) or _row_source(
        connection, insert, _prepared(connection, insert, ordered, saving=False), typed=False
    )
    table, unique_columns = quote(meta.db_table), [quote(meta.get_field(n).column) for n in unique]
    read_fields = [meta.pk, *(meta.get_field(n) for n in fields)]
    read = ", ".join(quote(f.column) for f in read_fields)
    one_key = "(" + ", ".join(["%s"] * len(unique)) + ")"
    lock_rows = f" ORDER BY {quote(meta.pk.column)} FOR UPDATE" if lock else ""
    sql = (
        f"WITH inserted AS (INSERT INTO {table} ({', '.join(quote(f.column) for f in insert)}) "
        f"{source} ON CONFLICT ({', '.join(unique_columns)}) DO NOTHING RETURNING {read}), "
        f"found AS (SELECT {read} FROM {table} WHERE ({', '.join(unique_columns)}) "
        f"IN ({', '.join([one_key] * len(keys))}){lock_rows}) "
        f"SELECT true AS s3tasks_inserted, {read} FROM inserted "
        f"UNION ALL SELECT false, {read} FROM found"
    )
    params += [value for key in keys for value in key]
    by_key = dict(zip(keys, ordered, strict=True))
    inserted = []
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    # the rows inserted are the objects given (their pk and unique values read back, which
    # need no conversion); only the rows found become model instances
    positions = [read_fields.index(meta.get_field(name)) for name in unique]
    found = load_rows(model, alias, read_fields, [row[1:] for row in rows if not row[0]])
    for row in rows:
        if not row[0]:
            continue
        obj = by_key[tuple(row[1 + i] for i in positions)]
        obj.pk = row[1]
        obj._state.adding = False
        obj._state.db = alias
        inserted.append(obj)
    return inserted, found


def _prepared(
    connection: Any, fields: Sequence[models.Field], objs: Sequence[models.Model], *, saving: bool
) -> list[list[Any]]:
    """Each object's values of `fields` as the database takes them: for an INSERT (defaults
    applied by `pre_save`), or with `saving` for an UPDATE of an existing row."""
    if saving:
        return [
            [f.get_db_prep_save(getattr(o, f.attname), connection) for f in fields] for o in objs
        ]
    return [[f.get_db_prep_save(f.pre_save(o, True), connection) for f in fields] for o in objs]


def _json_rows(
    connection: Any, fields: Sequence[models.Field], objs: Sequence[models.Model], *, saving: bool
) -> tuple[str, list[Any]] | None:
    """PostgreSQL: the objects' rows as ONE JSON parameter, a table by
    `json_populate_recordset` (typed as the model's table), and that parameter; None where
    it does not apply (another database, a value JSON cannot carry): use `_row_source`.

    A VALUES list has a placeholder per value, and psycopg parses a statement of more than 50
    parameters again every time (it caches only shorter ones): a tenth of a batch's CPU went
    there. One parameter keeps the SQL the same for every batch of a size, and
    `json.dumps` of the rows costs less than adapting each value.
    """
    if connection.vendor != "postgresql":
        return None
    kinds = _json_kinds(fields)
    use_tz = settings.USE_TZ
    aware = timezone.is_aware
    rows = []
    for obj in objs:
        row = {}
        for f, kind in zip(fields, kinds, strict=True):
            value = getattr(obj, f.attname) if saving else f.pre_save(obj, True)
            if kind == "json":
                if f.encoder is not None or value is None:
                    return None  # a custom encoder, or SQL NULL vs JSON null: keep Django's way
            elif kind == "datetime" and isinstance(value, datetime) and use_tz == aware(value):
                value = value.isoformat()
            elif kind is None or not (value is None or _plain(kind, value)):
                # not a value Django stores as is: its own preparation
                value = f.get_db_prep_save(value, connection)
                if isinstance(value, datetime):
                    value = value.isoformat()
            row[f.column] = value
        rows.append(row)
    try:
        data = json.dumps(rows, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):  # e.g. a Decimal, a UUID, bytes: let psycopg adapt them
        return None
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    table = quote(fields[0].model._meta.db_table)
    return f"SELECT {columns} FROM json_populate_recordset(NULL::{table}, %s)", [data]


# Fields whose value Django stores as is once it has the field's Python type (its
# get_db_prep_save returns it unchanged): JSON carries it without that call, which was a
# quarter of a batch's CPU. Anything else goes through get_db_prep_save.
_KINDS = {
    **dict.fromkeys(["CharField", "TextField", "SlugField", "EmailField", "URLField"], "str"),
    **dict.fromkeys(
        [
            "IntegerField",
            "BigIntegerField",
            "SmallIntegerField",
            "PositiveIntegerField",
            "PositiveBigIntegerField",
            "PositiveSmallIntegerField",
            "AutoField",
            "BigAutoField",
            "SmallAutoField",
        ],
        "int",
    ),
    "FloatField": "float",
    "BooleanField": "bool",
    "DateTimeField": "datetime",
    "JSONField": "json",
}


def _plain(kind: str | None, value: Any) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return type(value) is int
    if kind == "float":
        return type(value) is float or type(value) is int
    return kind == "bool" and type(value) is bool


_kinds_cache: dict[tuple, list[str | None]] = {}


def _json_kinds(fields: Sequence[models.Field]) -> list[str | None]:
    """Each field's kind for `_json_rows` (None: always Django's preparation)."""
    key = (fields[0].model, *(f.attname for f in fields))  # hashing a Field costs more
    kinds = _kinds_cache.get(key)
    if kinds is None:
        kinds = []
        for f in fields:
            target = f.target_field if f.is_relation else f
            kind = _KINDS.get(target.get_internal_type())
            kinds.append("json" if isinstance(f, models.JSONField) else kind)
        _kinds_cache[key] = kinds
    return kinds


def _row_source(
    connection: Any, fields: Sequence[models.Field], rows: Sequence[Sequence[Any]], *, typed: bool
) -> tuple[str, list[Any]]:
    """`VALUES` giving `rows` (one value per field) as a table, and its parameters.

    With `typed` (PostgreSQL, a VALUES used as a table, not as an INSERT's rows), the first
    row's placeholders carry their column types: a VALUES column holding only NULLs would
    otherwise be `text`, which an UPDATE cannot assign to a timestamp; the other rows take the
    first row's types. Casting only one row keeps the SQL text under psycopg's 4 KB limit for
    caching a parsed query. On PostgreSQL `_json_rows` is used instead where it can be (one
    parameter); one array per column through `unnest` was tried too and was no faster.
    """
    plain = "(" + ", ".join(["%s"] * len(fields)) + ")"
    first = plain
    if typed and connection.vendor == "postgresql":
        first = "(" + ", ".join(f"%s::{f.db_type(connection)}" for f in fields) + ")"
    values = ", ".join([first] + [plain] * (len(rows) - 1))
    return f"VALUES {values}", [value for r in rows for value in r]


def _insert_one(obj: models.Model, alias: str) -> bool:
    try:
        with transaction.atomic(using=alias):
            obj.save(force_insert=True, using=alias)
    except IntegrityError:
        obj.pk = None
        return False
    return True


@cache
def _fields(model: type[models.Model], names: tuple[str, ...]) -> list[models.Field]:
    return [model._meta.get_field(name) for name in names]


def update_rows(objs: Sequence[models.Model], fields: Sequence[str]) -> None:
    """Write `fields` of every object (found by primary key) in one statement.

    Not `bulk_update`: it builds a CASE expression per field and row, and cost more CPU than
    all the rest of a batch's dispatch. PostgreSQL gets one `UPDATE … FROM` a table of the new
    values (`_json_rows`) for several rows (one round trip); one row, or SQLite (in-process),
    the single-row UPDATE.
    """
    if not objs:
        return
    meta = objs[0]._meta
    connection = connections[router.db_for_write(type(objs[0]))]
    quote = connection.ops.quote_name
    columns = _fields(type(objs[0]), tuple(fields))
    table, pk = quote(meta.db_table), quote(meta.pk.column)
    if connection.vendor == "postgresql" and len(objs) > 1:
        with_pk = [meta.pk, *columns]
        source, params = _json_rows(connection, with_pk, objs, saving=True) or _row_source(
            connection, with_pk, _prepared(connection, with_pk, objs, saving=True), typed=True
        )
        names = ", ".join(quote(f.column) for f in with_pk)
        assign = ", ".join(f"{quote(f.column)} = v.{quote(f.column)}" for f in columns)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET {assign} FROM ({source}) AS v({names}) "
                f"WHERE {table}.{pk} = v.{pk}",
                params,
            )
        return
    values = _prepared(connection, columns, objs, saving=True)
    sets = ", ".join(f"{quote(f.column)} = %s" for f in columns)
    sql = f"UPDATE {table} SET {sets} WHERE {pk} = %s"
    with connection.cursor() as cursor:
        if len(objs) == 1:
            cursor.execute(sql, [*values[0], objs[0].pk])
        else:
            cursor.executemany(sql, [[*row, obj.pk] for obj, row in zip(objs, values, strict=True)])


# --- events --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedEvents:
    """The outcome of `record_events`: every event's record id, and the records created now."""

    ids: dict[str, int]  # dedup key -> EventRecord id
    created: dict[str, EventRecord]  # dedup key -> the record this call inserted


def new_record(event: S3Event, message_id: str = "", queue_name: str = "") -> EventRecord:
    """An unsaved `EventRecord` of `event`, its text cut to the column sizes."""
    return EventRecord(
        dedup_key=event.dedup_key,
        bucket=event.bucket,
        key=event.key,
        event_name=event.event_name,
        event_time=event.event_time,
        size=event.size,
        etag=event.etag[:100],
        version_id=event.version_id,
        sequencer=event.sequencer[:100],
        region=event.region[:32],
        source=event.source,
        payload=event.to_dict(),
        message_id=message_id[:200],
        queue_name=queue_name[:200],
    )


def record_events(entries: Iterable[tuple[S3Event, str, str]]) -> RecordedEvents:
    """Record each (event, message id, queue name) once per dedup key (safe under races).

    The first entry of a key names the message it came in; later duplicates share its row.
    """
    wanted: dict[str, EventRecord] = {}
    for event, message_id, queue_name in entries:
        record = new_record(event, message_id, queue_name)
        wanted.setdefault(record.dedup_key, record)
    both = insert_and_find(list(wanted.values()), ("dedup_key",), ["dedup_key"])
    if both is None:
        inserted, found = insert_missing(list(wanted.values()), ("dedup_key",)), []
    else:
        inserted, found = both
    created = {r.dedup_key: r for r in inserted}
    ids = {key: record.pk for key, record in created.items()}
    ids.update((record.dedup_key, record.pk) for record in found)
    existing = [key for key in wanted if key not in ids]
    if existing:
        found = EventRecord.objects.filter(dedup_key__in=existing).order_by()
        ids.update(found.values_list("dedup_key", "pk"))
    return RecordedEvents(ids=ids, created=created)


def record_event(
    event: S3Event, *, message_id: str = "", queue_name: str = ""
) -> tuple[EventRecord, bool]:
    """The `EventRecord` of `event` and whether this call created it (safe under races)."""
    recorded = record_events([(event, message_id, queue_name)])
    key = event.dedup_key
    if key in recorded.created:
        return recorded.created[key], True
    return EventRecord.objects.get(pk=recorded.ids[key]), False


# --- runs ----------------------------------------------------------------------------------


def ensure_runs(
    wanted: Mapping[RunKey, str],
    *,
    lock: bool = False,
    task_ids: Mapping[RunKey, str] | None = None,
    lease: datetime | None = None,
) -> dict[RunKey, HandlerRun]:
    """The run of every (event id, handler name) in `wanted` (which maps it to its Celery
    queue), created `pending` when missing (safe under races).

    With `lock`, the runs that already existed are read `SELECT … FOR UPDATE` in id order (the
    caller must hold a transaction): a run another worker is running makes this wait until that
    worker's transaction ends, and then shows its outcome. Runs created here need no lock:
    nobody else sees them before the caller commits.

    A run created for a key in `task_ids` is created handed off: that Celery task id and the
    `lease`. A run returned with the task id it was given is therefore one this call created.
    """
    task_ids = task_ids or {}
    fresh = [
        HandlerRun(
            event_id=key[0],
            handler_name=key[1],
            celery_queue=queue[:200],
            celery_task_id=task_ids.get(key, ""),
            lease_expires_at=lease if key in task_ids else None,
        )
        for key, queue in wanted.items()
    ]
    unique = ("event", "handler_name")
    both = insert_and_find(fresh, unique, RUN_FIELDS, lock=lock)
    inserted, found = (insert_missing(fresh, unique), []) if both is None else both
    runs = {(r.event_id, r.handler_name): r for r in [*inserted, *found]}
    existing = [key for key in wanted if key not in runs]
    if existing:
        runs.update(_existing_runs(existing, lock=lock))
    return runs


def _existing_runs(keys: Iterable[RunKey], *, lock: bool) -> dict[RunKey, HandlerRun]:
    names_by_event: dict[int, list[str]] = defaultdict(list)
    for event_id, name in keys:
        names_by_event[event_id].append(name)
    match = reduce(
        or_, (Q(event_id=e, handler_name__in=names) for e, names in names_by_event.items())
    )
    rows = HandlerRun.objects.filter(match).order_by("pk")  # id order: no lock-order deadlocks
    if lock:
        rows = rows.select_for_update()
    return {(run.event_id, run.handler_name): run for run in rows}


def ensure_run(record: EventRecord, handler_name: str, celery_queue: str = "") -> HandlerRun:
    """The run of `handler_name` for `record`, created `pending` if missing (safe under races)."""
    key = (record.pk, handler_name)
    return ensure_runs({key: celery_queue})[key]


def claim_run(run_id: int, task_id: str, ended: Collection[str]) -> HandlerRun | None:
    """Lock run `run_id` for an attempt by Celery task `task_id` (`SELECT … FOR UPDATE`, one
    statement), unless its state is in `ended` or another task owns it (its `celery_task_id`
    is neither empty nor `task_id`); the caller counts the attempt in its outcome UPDATE.

    Returns the run, locked until the caller's transaction ends, or None. A row lock writes
    no row version and no index entry: measured cheaper than claiming with an UPDATE that the
    outcome UPDATE then rewrites. A rival holding the lock is waited for, then the conditions
    are checked again on the row it left (PostgreSQL's READ COMMITTED); SQLite serialises
    writers instead.
    """
    alias = router.db_for_write(HandlerRun)
    connection = connections[alias]
    meta = HandlerRun._meta
    quote = connection.ops.quote_name
    state = quote(meta.get_field("state").column)
    task = quote(meta.get_field("celery_task_id").column)
    columns = ", ".join(quote(f.column) for f in meta.concrete_fields)
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    sql = (
        f"SELECT {columns} FROM {quote(meta.db_table)} WHERE {quote(meta.pk.column)} = %s "
        f"AND {state} NOT IN ({', '.join(['%s'] * len(ended))}) AND {task} IN ('', %s){lock}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [run_id, *ended, task_id])
        row = cursor.fetchone()
    return None if row is None else load_rows(HandlerRun, alias, meta.concrete_fields, [row])[0]


def load_rows(
    model: type[M], alias: str, fields: Sequence[models.Field], rows: Iterable[Sequence[Any]]
) -> list[M]:
    """Model instances of rows read with a cursor (one value per field, in order), the values
    converted as a queryset converts them (`Model.from_db`). Cheaper than `raw()`, which works
    out its columns and converters again for every query (~0.3 ms, most of a claim's CPU)."""
    connection = connections[alias]
    converters = _converters(connection, tuple(fields))
    names = [f.attname for f in fields]
    loaded = []
    for row in rows:
        values = list(row)
        for i, funcs in converters:
            for func, expression in funcs:
                values[i] = func(values[i], expression, connection)
        loaded.append(model.from_db(alias, names, values))
    return loaded


_converter_cache: WeakKeyDictionary[Any, dict[tuple, list]] = WeakKeyDictionary()


def _converters(connection: Any, fields: tuple[models.Field, ...]) -> list[tuple[int, list]]:
    """For each field that has any: (its position, [(converter, column expression)]), as the
    SQL compiler finds them (the backend's, then the field's own `from_db_value`)."""
    cached = _converter_cache.setdefault(connection, {})
    key = (fields[0].model, *(f.attname for f in fields))  # hashing a Field costs more
    if key not in cached:
        found = []
        for i, field in enumerate(fields):
            column = field.get_col(field.model._meta.db_table)
            funcs = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
            if funcs:
                found.append((i, [(func, column) for func in funcs]))
        cached[key] = found
    return cached[key]
