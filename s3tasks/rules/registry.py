"""The handler registry and the decorators that fill it.

`@on_s3_event(...)` registers a function as a Celery task *and* declares a code binding
(turned into `NotificationRule`/`HandlerBinding` rows on migrate). `@s3_handler` only
registers, for handlers bound in the admin.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from s3tasks.exceptions import UnknownHandler
from s3tasks.rules.filters import normalize_event_pattern

F = TypeVar("F", bound=Callable[..., Any])

ACCESS_MODES = ("read", "write", "readwrite")


@dataclass(frozen=True)
class CodeBinding:
    """A binding declared in code: which events of which bucket run the handler."""

    bucket: str
    events: tuple[str, ...] = ("ObjectCreated:*",)
    prefix: str = ""
    suffix: str = ""
    queue: str = ""  # SQS destination name; "" = S3TASKS["DEFAULT_QUEUE"] unless topic is set
    topic: str = ""  # SNS destination name
    celery_queue: str = ""


@dataclass(frozen=True)
class OutputLocation:
    """Where a handler writes: `bucket` plus an optional key prefix (loop detection)."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, spec: str) -> OutputLocation:
        bucket, _, prefix = spec.partition("/")
        return cls(bucket=bucket, prefix=prefix)


@dataclass(frozen=True)
class Handler:
    """A registered handler function and what is known about it."""

    name: str
    func: Callable[..., Any]
    bindings: tuple[CodeBinding, ...] = ()
    writes_to: tuple[OutputLocation, ...] = ()
    access: str = "read"
    location: str = ""
    max_retries: int | None = None
    # False: the handler sends no SQL, so it runs without a savepoint (SQL it sends anyway fails)
    uses_database: bool = True

    @property
    def task(self) -> Any:
        """The Celery task running this handler (created on first use: importing Celery costs
        ~250 ms, which a Lambda cold start that runs handlers inline should not pay)."""
        return celery_task(self.name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)


class HandlerRegistry:
    """Name → Handler. One per process (`registry`); tests may build their own."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def __iter__(self) -> Iterator[Handler]:
        return iter(list(self._handlers.values()))

    def __len__(self) -> int:
        return len(self._handlers)

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def get(self, name: str) -> Handler:
        try:
            return self._handlers[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise UnknownHandler(
                f"No s3tasks handler named {name!r} is registered (known: {known}). Is the "
                "module that defines it imported (e.g. listed in INSTALLED_APPS' handlers)?"
            ) from None

    def add(self, handler: Handler) -> Handler:
        existing = self._handlers.get(handler.name)
        if existing is not None and existing.func is not handler.func:
            same_place = existing.location == handler.location
            if not same_place:
                raise ValueError(
                    f"Handler name {handler.name!r} is already registered at "
                    f"{existing.location}; pass name= to one of them."
                )
        self._handlers[handler.name] = handler
        return handler

    def remove(self, name: str) -> None:
        self._handlers.pop(name, None)


registry = HandlerRegistry()


def _target(chosen: HandlerRegistry | None) -> HandlerRegistry:
    return chosen if chosen is not None else default_registry


default_registry = registry


def _location(func: Callable[..., Any]) -> str:
    try:
        line = inspect.getsourcelines(func)[1]
    except (OSError, TypeError):
        line = 0
    return f"{func.__module__}:{line}" if line else func.__module__


TaskFactory = Callable[[str], Any]  # handler name -> its Celery task
_task_factory: TaskFactory | None = None


def use_task_factory(factory: TaskFactory) -> None:
    """Set how a handler's Celery task is made (`s3tasks.processing.celery_tasks` does, when
    the app is ready), so the registry never imports the layer that runs handlers."""
    global _task_factory
    _task_factory = factory


def celery_task(name: str) -> Any:
    """The Celery task of handler `name`."""
    if _task_factory is None:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            "s3tasks cannot build Celery tasks before its app is ready: add 's3tasks' to "
            "INSTALLED_APPS and call django.setup() first."
        )
    return _task_factory(name)


def _register(
    func: F,
    *,
    name: str | None,
    bindings: Sequence[CodeBinding],
    writes_to: Iterable[str],
    access: str,
    max_retries: int | None,
    uses_database: bool = True,
    target: HandlerRegistry | None,
) -> F:
    if access not in ACCESS_MODES:
        raise ValueError(f"access must be one of {ACCESS_MODES}, not {access!r}.")
    handler_name = name or f"{func.__module__}.{func.__qualname__}"
    handler = Handler(
        name=handler_name,
        func=func,
        bindings=tuple(bindings),
        writes_to=tuple(OutputLocation.parse(w) for w in writes_to),
        access=access,
        location=_location(func),
        max_retries=max_retries,
        uses_database=uses_database,
    )
    _target(target).add(handler)
    if "celery" in sys.modules and _task_factory is not None:
        # A Celery worker imports Celery before the handler modules: register the task now
        # so the worker knows its name when a message for it arrives.
        _task_factory(handler_name)
    func.s3tasks_handler = handler  # type: ignore[attr-defined]
    return func


def on_s3_event(
    bucket: str,
    events: Sequence[str] | str = ("s3:ObjectCreated:*",),
    prefix: str = "",
    suffix: str = "",
    *,
    name: str | None = None,
    queue: str = "",
    topic: str = "",
    celery_queue: str = "",
    writes_to: Iterable[str] = (),
    access: str = "read",
    max_retries: int | None = None,
    uses_database: bool = True,
    registry: HandlerRegistry | None = None,
) -> Callable[[F], F]:
    """Register a handler and bind it to a bucket's events.

    >>> @on_s3_event("uploads", events=["s3:ObjectCreated:*"], prefix="incoming/")
    ... def import_csv(event: S3Event) -> None: ...

    `queue`/`topic` name the S3 destination (default: `S3TASKS["DEFAULT_QUEUE"]`);
    `writes_to=["bucket/prefix/"]` declares outputs so a system check can warn about loops.
    `uses_database=False` says the handler sends no SQL (it may still return follow-up
    commands): it then runs without a savepoint of its own, which saves two statements per run.
    Stack the decorator to bind one handler to several buckets.
    """
    patterns = [events] if isinstance(events, str) else list(events)
    if not patterns:
        raise ValueError("on_s3_event needs at least one event pattern, e.g. 's3:ObjectCreated:*'.")
    if queue and topic:
        raise ValueError("on_s3_event takes queue= or topic=, not both.")
    binding = CodeBinding(
        bucket=bucket,
        events=tuple(normalize_event_pattern(p) for p in patterns),
        prefix=prefix,
        suffix=suffix,
        queue=queue,
        topic=topic,
        celery_queue=celery_queue,
    )

    def decorate(func: F) -> F:
        previous: Handler | None = getattr(func, "s3tasks_handler", None)
        outputs = list(writes_to)
        bindings: tuple[CodeBinding, ...] = (binding,)
        if previous is not None:  # stacked decorators: one handler, several bindings
            _target(registry).remove(previous.name)
            func = previous.func  # type: ignore[assignment]
            bindings += previous.bindings
            outputs += [f"{w.bucket}/{w.prefix}" for w in previous.writes_to]
        return _register(
            func,
            name=name or (previous.name if previous else None),
            bindings=bindings,
            writes_to=outputs,
            access=access,
            max_retries=max_retries,
            uses_database=uses_database,
            target=registry,
        )

    return decorate


def s3_handler(
    func: F | None = None,
    *,
    name: str | None = None,
    writes_to: Iterable[str] = (),
    access: str = "read",
    max_retries: int | None = None,
    uses_database: bool = True,
    registry: HandlerRegistry | None = None,
) -> Any:
    """Register a handler without binding it (bind it to rules in the admin)."""

    def decorate(f: F) -> F:
        return _register(
            f,
            name=name,
            bindings=(),
            writes_to=writes_to,
            access=access,
            max_retries=max_retries,
            uses_database=uses_database,
            target=registry,
        )

    return decorate(func) if func is not None else decorate
