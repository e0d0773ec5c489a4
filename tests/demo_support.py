"""Helpers of the demo tests: a user's shell, the process tree under /proc, and S3's rules for
a presigned POST policy (moto accepts any form, so the policy is checked here as S3 would)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import ROOT

# What a developer's shell has none of: the test run's database, endpoint, broker, dev mode.
NOT_IN_A_USERS_SHELL = ("PYTEST_", "S3TASKS_", "DJANGO_", "CELERY_")


def demo_env() -> dict[str, str]:
    """A user's shell for `manage.py s3tasks_demo`: the demo must set everything it needs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(NOT_IN_A_USERS_SHELL)}
    env["PYTHONPATH"] = str(ROOT)
    return env


# --- processes, read from /proc (Linux) ----------------------------------------------------


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    parent: int
    state: str
    started: int  # clock ticks after boot: tells a reused pid from the original
    command: str


def read_process(pid: int) -> ProcessInfo | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    return ProcessInfo(pid, int(fields[1]), fields[0], int(fields[19]), command.strip())


def all_processes() -> list[ProcessInfo]:
    found = (read_process(int(name)) for name in os.listdir("/proc") if name.isdigit())
    return [p for p in found if p is not None]


def descendants(root: int) -> list[ProcessInfo]:
    """Every process below `root` (children, grandchildren, …)."""
    processes = all_processes()
    found: list[ProcessInfo] = []
    parents = {root}
    while True:
        level = [p for p in processes if p.parent in parents and p not in found]
        if not level:
            return found
        found += level
        parents = {p.pid for p in level}


def still_running(process: ProcessInfo) -> bool:
    """The same process (not a reused pid) exists and has not exited (zombies have)."""
    now = read_process(process.pid)
    return now is not None and now.started == process.started and now.state not in "ZX"


# --- S3's presigned POST policy rules ------------------------------------------------------

# Form fields S3 does not require a condition for (AWS: "Creating a POST policy").
UNCONDITIONED_FIELDS = {"policy", "x-amz-signature", "signature", "awsaccesskeyid", "file"}


def _condition_parts(condition: Any) -> tuple[str, str, Any]:
    """(operator, field, value) of one condition: {"f": v}, ["eq"|"starts-with", "$f", v]."""
    if isinstance(condition, dict):
        ((name, value),) = condition.items()
        return "eq", name.lower(), value
    operator, name, value = condition
    return operator.lower(), name.lstrip("$").lower(), value


def policy_violations(
    policy: dict[str, Any], bucket: str, fields: dict[str, str], size: int
) -> list[str]:
    """Why S3 would refuse this form (empty: it would accept it)."""
    form = {k.lower(): v for k, v in fields.items()} | {"bucket": bucket}
    problems: list[str] = []
    covered: set[str] = set()
    for condition in policy["conditions"]:
        if isinstance(condition, list) and condition[0] == "content-length-range":
            _, low, high = condition
            if not low <= size <= high:
                problems.append(f"size {size} outside {low}..{high}")
            continue
        operator, name, value = _condition_parts(condition)
        covered.add(name)
        actual = form.get(name, "")
        if operator == "eq" and actual != value:
            problems.append(f"{name} is {actual!r}, the policy wants {value!r}")
        elif operator == "starts-with" and not actual.startswith(value):
            problems.append(f"{name} {actual!r} does not start with {value!r}")
    for name in form.keys() - covered - UNCONDITIONED_FIELDS:
        if not name.startswith("x-ignore-"):
            problems.append(f"field {name!r} has no condition in the policy")
    return problems
