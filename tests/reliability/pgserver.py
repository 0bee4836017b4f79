"""A PostgreSQL server a test owns: initdb into a temporary folder, pg_ctl on a free port, stopped after."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running server: ``url`` (psycopg, database ``postgres``), :meth:`stop`, :meth:`start`."""

    def __init__(self, data: Path, port: int, user: str | None) -> None:
        self.data, self.port, self.user = data, port, user
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def _ctl(self, *args: str) -> None:
        cmd = [shutil.which("pg_ctl") or "pg_ctl", "-D", str(self.data), "-w", *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        self._ctl(
            "-l",
            str(self.data / "server.log"),
            "-o",
            f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "stop")


@contextlib.contextmanager
def own_postgres(where: Path) -> Iterator[Server]:
    """Start a fresh server under ``where`` (as root: in a temporary folder the ``postgres`` user can reach); skips the test (with the reason) when PostgreSQL is not installed."""
    initdb = shutil.which("initdb")
    if initdb is None or shutil.which("pg_ctl") is None:
        pytest.skip("PostgreSQL is not installed (initdb/pg_ctl not on PATH)")
    user = None
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            user = pwd.getpwnam("postgres").pw_name
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
    base = Path(tempfile.mkdtemp(prefix="gliofit-pg-")) if user else where  # the server user must reach it
    data = base / "pgdata"
    data.mkdir(parents=True)
    if user:
        shutil.chown(base, user)
        shutil.chown(data, user)
    cmd = [initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]
    subprocess.run(["runuser", "-u", user, "--", *cmd] if user else cmd, check=True, capture_output=True, timeout=120)
    server = Server(data, _free_port(), user)
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            server.stop("immediate")
        if user:
            shutil.rmtree(base, ignore_errors=True)
