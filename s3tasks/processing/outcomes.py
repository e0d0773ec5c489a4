"""What dispatch did: `RunOutcome` per handler, `DispatchOutcome` per event (what
`dispatch_event` returns; importable from `s3tasks.processing.dispatch` too), shared by
dispatch and the Celery hand-off."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from s3tasks.models import HandlerRun, RunState


@dataclass(frozen=True)
class RunOutcome:
    """What dispatch did with one handler.

    `skipped`: the run had already ended or was already handed off; `permanent`: it failed for
    good (deliveries never run it again); `deferred`: this process does not have the handler,
    so the run is left untouched for one that does; `unavailable`: the broker could not be
    reached, so nothing was handed off.

    When the handler ran in this call (inline), `result` is what it returned and `exception`
    what it raised; both stay in memory (the run row keeps only their text).
    """

    handler_name: str
    run_id: int | None
    state: str
    skipped: bool = False
    error: str = ""
    permanent: bool = False
    deferred: bool = False
    unavailable: bool = False
    result: Any = field(default=None, compare=False, repr=False)
    exception: BaseException | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        """Succeeded, skipped as done/in flight, or durably handed to Celery."""
        return not self.error

    @property
    def retryable(self) -> bool:
        """Failed in a way a later delivery of the same message should retry."""
        return bool(self.error) and not (self.permanent or self.deferred or self.unavailable)


@dataclass(frozen=True)
class DispatchOutcome:
    """What dispatch did with one event; `ok` means the message may be deleted."""

    event_id: int | None
    runs: tuple[RunOutcome, ...]
    ok: bool
    permanent: bool = False
    error: str = ""

    @property
    def unavailable(self) -> bool:
        return any(r.unavailable for r in self.runs)

    @property
    def deferred(self) -> bool:
        return any(r.deferred for r in self.runs)

    @property
    def retryable(self) -> bool:
        return any(r.retryable for r in self.runs)


def skipped_outcome(run: HandlerRun) -> RunOutcome:
    """A run this delivery leaves alone: done, handed off, or failed for good."""
    if run.state == RunState.FAILED:
        error = run.error or "failed permanently"
        return RunOutcome(run.handler_name, run.pk, run.state, True, error, permanent=True)
    return RunOutcome(run.handler_name, run.pk, run.state, skipped=True)
