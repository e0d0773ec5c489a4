"""A throwaway PostgreSQL cluster on its own port, for outage tests (Debian's `pg_*cluster`).

The shared cluster on 5432 is never touched: this one is created on a free port from 5440 up,
started, stopped and started again on demand, and dropped by `drop()` (always, in a `finally`).

    with PgCluster.create("s3chaos") as cluster:
        env = {**env, **cluster.env("chaos")}
        cluster.stop(); ...; cluster.start()
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

FIRST_PORT = 5440
SHARED_PORT = 5432


def tools_available() -> str | None:
    """None when Debian's cluster tools and a PostgreSQL version are installed, else why not."""
    for tool in ("pg_createcluster", "pg_ctlcluster", "pg_dropcluster", "pg_lsclusters"):
        if shutil.which(tool) is None:
            return f"needs {tool} (Debian's postgresql-common) to run a PostgreSQL of its own"
    if installed_version() is None:
        return "needs a PostgreSQL server version under /etc/postgresql or /usr/lib/postgresql"
    return None


def installed_version() -> str | None:
    """The newest PostgreSQL major version installed (e.g. "15"), or None."""
    versions = [p.name for p in Path("/usr/lib/postgresql").glob("*") if (p / "bin").is_dir()]
    numeric = sorted((v for v in versions if v.isdigit()), key=int)
    return numeric[-1] if numeric else None


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _cluster_ports() -> set[int]:
    """Ports of every cluster already defined (running or not)."""
    out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=False)
    ports = set()
    for line in out.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2].isdigit():
            ports.add(int(fields[2]))
    return ports


def free_cluster_port(first: int = FIRST_PORT, attempts: int = 60) -> int:
    """A port from `first` up that no process and no defined cluster uses."""
    defined = _cluster_ports()
    for port in range(first, first + attempts):
        if port != SHARED_PORT and port not in defined and not _port_taken(port):
            return port
    raise RuntimeError(f"no free port for a PostgreSQL cluster in {first}..{first + attempts}")


def _run(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result.stdout


@dataclass
class PgCluster:
    """One cluster made by `create()`; `drop()` removes its data directory and config."""

    version: str
    name: str
    port: int
    dropped: bool = False

    @classmethod
    def create(cls, prefix: str = "s3chaos") -> PgCluster:
        """A new, started cluster with trust auth on loopback (name unique to this process)."""
        version = installed_version()
        if version is None:
            raise RuntimeError(tools_available() or "no PostgreSQL version installed")
        cluster = cls(version, f"{prefix}{os.getpid()}", free_cluster_port())
        _run(
            "pg_createcluster",
            version,
            cluster.name,
            "-p",
            str(cluster.port),
            "--",
            "--auth=trust",
        )
        try:
            cluster.start()
        except Exception:
            cluster.drop()
            raise
        return cluster

    def start(self, timeout: float = 60) -> None:
        _run("pg_ctlcluster", self.version, self.name, "start", timeout=timeout)
        self.wait_ready(timeout)

    def stop(self) -> None:
        """Stop now, as an outage would: `-m fast` ends every open connection."""
        _run("pg_ctlcluster", self.version, self.name, "stop", "-m", "fast")

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = subprocess.run(
                ["pg_isready", "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"cluster {self.name} did not accept connections on {self.port}")

    def create_database(self, name: str) -> None:
        _run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)

    def env(self, database: str) -> dict[str, str]:
        """Environment for `manage.py` (project.settings) to use `database` on this cluster."""
        return {
            "S3TASKS_DB": "postgres",
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGUSER": "postgres",
            "PGDATABASE": database,
        }

    def drop(self) -> None:
        """Stop and remove the cluster (idempotent)."""
        if self.dropped:
            return
        _run("pg_dropcluster", "--stop", self.version, self.name)
        self.dropped = True

    def __enter__(self) -> PgCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.drop()


def recreate_database(name: str, port: int = SHARED_PORT) -> dict[str, str]:
    """Drop and create database `name` (e.g. on the shared cluster); the env for manage.py."""
    common = ["-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
    _run("dropdb", *common, "--if-exists", "--force", name)
    _run("createdb", *common, name)
    return {
        "S3TASKS_DB": "postgres",
        "PGHOST": "127.0.0.1",
        "PGPORT": str(port),
        "PGUSER": "postgres",
        "PGDATABASE": name,
    }


def drop_database(name: str, port: int = SHARED_PORT) -> None:
    _run(
        "dropdb",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-U",
        "postgres",
        "--if-exists",
        "--force",
        name,
    )
