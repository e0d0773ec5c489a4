"""`manage.py s3tasks_demo` (kept running) ends every process it started when it is stopped:
SIGTERM from a supervisor, Ctrl-C in a terminal, SIGINT to a demo started in the background."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from project.demo import processes
from s3tasks.emulator import free_port, port_open
from tests.conftest import ROOT
from tests.demo_support import (
    ProcessInfo,
    demo_env,
    descendants,
    read_process,
    still_running,
)

# Generous: on a loaded machine migrate, sync and the upload loop (all before runserver
# starts) have taken minutes. Unloaded, a test takes 15-30 s.
STARTUP_TIMEOUT = 900
LOOP_TIMEOUT = "600"
EXIT_TIMEOUT = 60
GONE_WITHIN = 5
# A part of each child's command line: the emulator, the demo itself, the worker, runserver.
DURING_THE_LOOP = {"moto.server", "s3tasks_demo --web-port", "sqs_worker"}
ALL_CHILDREN = DURING_THE_LOOP | {"runserver"}


def demo_command(data_dir: Path, web_port: int) -> list[str]:
    return [
        *(sys.executable, "manage.py", "s3tasks_demo"),
        *("--data-dir", str(data_dir), "--web-port", str(web_port), "--timeout", LOOP_TIMEOUT),
    ]


def output(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:]


def wait_for_children(
    demo: subprocess.Popen, needed: set[str], web_port: int, log: Path
) -> list[ProcessInfo]:
    """The demo's processes once the `needed` ones run (and runserver, if needed, listens)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        assert demo.poll() is None, f"the demo exited early ({demo.returncode}):\n{output(log)}"
        tree = descendants(demo.pid)
        running = {part for part in needed if any(part in p.command for p in tree)}
        if running == needed and ("runserver" not in needed or port_open(web_port)):
            return tree
        time.sleep(0.5)
    raise AssertionError(f"the demo's processes did not all start:\n{output(log)}")


def status_of(url: str) -> tuple[int, str]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(url, timeout=10) as response:
            return response.status, ""
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Location", "")


@pytest.fixture
def started_demo(tmp_path) -> Iterator[tuple[subprocess.Popen, list[ProcessInfo], Path, int]]:
    """Start the demo (optionally behind a `prefix` command); kill what a failing test leaves."""
    started: list[ProcessInfo] = []
    processes: list[subprocess.Popen] = []

    def start(
        prefix: tuple[str, ...] = (), new_session: bool = False, needed: set[str] = ALL_CHILDREN
    ) -> tuple[subprocess.Popen, list[ProcessInfo], Path, int]:
        web_port, log = free_port(), tmp_path / "demo.out"
        demo = subprocess.Popen(
            [*prefix, *demo_command(tmp_path / "data", web_port)],
            cwd=ROOT,
            env=demo_env(),
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )
        processes.append(demo)
        tree = wait_for_children(demo, needed, web_port, log)
        started.extend(tree)
        return demo, tree, log, web_port

    yield start
    for process in started:
        if still_running(process):
            os.kill(process.pid, signal.SIGKILL)
    for demo in processes:
        if demo.poll() is None:
            demo.kill()
            demo.wait()


def assert_all_gone(tree: list[ProcessInfo], log: Path) -> None:
    deadline = time.monotonic() + GONE_WITHIN
    while any(still_running(p) for p in tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [f"{p.pid} {p.command}" for p in tree if still_running(p)]
    assert not left, f"still running after the demo exited: {left}\n{output(log)}"


@pytest.mark.integration
def test_sigterm_ends_the_demo_and_every_process_it_started(started_demo):
    demo, tree, log, web_port = started_demo()
    # While it runs, demo mode serves the demo pages (behind the admin's login).
    assert status_of(f"http://127.0.0.1:{web_port}/demo/") == (
        302,
        "/admin/login/?next=/demo/",
    )

    demo.send_signal(signal.SIGTERM)

    assert demo.wait(EXIT_TIMEOUT) == 0, output(log)
    assert_all_gone(tree, log)
    assert "Stopped." in output(log)


@pytest.mark.integration
def test_ctrl_c_in_a_terminal_ends_every_process(started_demo):
    """A terminal's Ctrl-C sends SIGINT to the foreground process group, not to one pid."""
    demo, tree, log, _ = started_demo(new_session=True)  # its group stands for the terminal's

    os.killpg(demo.pid, signal.SIGINT)

    assert demo.wait(EXIT_TIMEOUT) == 0, output(log)
    assert_all_gone(tree, log)


@pytest.mark.integration
def test_sigint_ends_a_demo_started_in_the_background(started_demo):
    """`cmd &` in a script starts cmd with SIGINT ignored; `kill -INT` must still stop it all,
    here while the upload loop is still running (before runserver starts)."""
    ignoring_sigint = ("sh", "-c", 'trap "" INT; exec "$@"', "sh")
    demo, tree, log, _ = started_demo(prefix=ignoring_sigint, needed=DURING_THE_LOOP)

    demo.send_signal(signal.SIGINT)

    assert demo.wait(EXIT_TIMEOUT) == 0, output(log)
    assert_all_gone(tree, log)


# --- the fallback: a process group whose leader does not clean up ---------------------------


def group_with_orphans(script: str) -> tuple[subprocess.Popen, list[ProcessInfo]]:
    leader = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    deadline = time.monotonic() + 30
    while len(descendants(leader.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return leader, [read_process(leader.pid), *descendants(leader.pid)]


@pytest.mark.parametrize(
    "script",
    [
        "sleep 300 & sleep 300 & wait",  # the leader dies on SIGTERM, its children do not know
        'trap "" TERM; sleep 300 & sleep 300 & wait',  # nobody in the group heeds SIGTERM
    ],
)
def test_ending_a_process_group_ends_what_its_leader_left_behind(monkeypatch, script):
    monkeypatch.setattr(processes, "GROUP_GRACE", 0.5)
    leader, group = group_with_orphans(script)
    try:
        processes.end_process_group(leader, grace=0.5)
        assert not [p for p in group if still_running(p)]
    finally:
        for process in group:
            if still_running(process):
                os.kill(process.pid, signal.SIGKILL)


def test_signal_latch_takes_over_an_ignored_sigint_but_leaves_nohup_alone():
    before = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGHUP)}
    try:
        with processes.SignalLatch() as latch:
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN  # nohup: outlive the tty
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # Python runs the handler between bytecodes
            assert latch.triggered and not latch.hurry
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            assert latch.hurry  # a second signal skips the grace periods
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # restored on exit
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
