"""A local AWS emulator for development, demos and tests: moto's server on loopback.

    with LocalEmulator() as aws:          # starts `python -m moto.server` on a free port
        S3TASKS["ENDPOINT_URL"] = aws.url

Needs `moto[server]` (the `demo` extra). The server listens on 127.0.0.1 only, never 0.0.0.0:
it accepts any credentials.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from s3tasks.exceptions import ImproperlyInstalled

# What `python -m moto.server` imports beyond moto itself (moto's `server` extra), by the
# module name to look for and the name pip installs it under.
SERVER_MODULES = {"moto": "moto", "flask": "flask", "flask_cors": "flask-cors"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_moto_server() -> None:
    """Raise `ImproperlyInstalled` naming the `demo` extra unless moto's server can start."""
    for module, package in SERVER_MODULES.items():
        if importlib.util.find_spec(module) is None:
            raise ImproperlyInstalled(package, "demo", "the local AWS emulator (moto's server)")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class LocalEmulator:
    """moto's HTTP server in a child process (its own state: nothing shared with `mock_aws`)."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> LocalEmulator:
        require_moto_server()
        output = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"moto's server exited with code {self.process.returncode}; is moto[server] "
                    "installed (pip install 's3tasks[demo]')?"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"moto's server did not listen on 127.0.0.1:{self.port} within {timeout:.0f} s"
                )
            time.sleep(0.05)
        return self

    def reset(self) -> None:
        """Forget every bucket, queue and topic (moto's own reset endpoint)."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> LocalEmulator:
        return self.start() if self.process is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
