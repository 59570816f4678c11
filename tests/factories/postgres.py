"""A throwaway PostgreSQL server (Debian's `postgresql` package) for the tests: `initdb` into a temporary
directory, the server started as our own child process on a free port of 127.0.0.1 with its socket in
that directory, one fresh database per test, and a fast shutdown at the end.

`initdb` refuses to run as root (CI runs as root): then the server's files and processes belong to the
`postgres` user that the package creates. The server is a direct child (not daemonised by `pg_ctl`),
so stopping it also reaps it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.factories.daemon import free_port

# Durability is not under test here: the server may lose everything on a crash, and starts faster.
_FAST = ("fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=60")


def _bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not found:
        pytest.fail("PostgreSQL is not installed: scripts/setup installs Debian's postgresql (apt, as root)")
    return found[-1].parent


class PostgresServer:
    def __init__(self) -> None:
        self._bin = _bin_dir()
        self._as_postgres = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="streamd-pg-"))
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)

    def _user(self) -> dict[str, Any]:
        """Popen arguments that run a command as `postgres` when we are root (no runuser in between)."""
        return {"user": "postgres", "group": "postgres", "extra_groups": []} if self._as_postgres else {}

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        data = self.root / "data"
        initdb = [self._bin / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        subprocess.run(
            [*initdb, "--locale=C.UTF-8", "--no-sync", "--no-instructions"],
            check=True,
            capture_output=True,
            cwd=self.root,
            **self._user(),
        )
        self.launch()

    def launch(self) -> None:
        """Start the server on its data directory and port (again, after `halt`)."""
        data = self.root / "data"
        settings = [
            "listen_addresses=127.0.0.1",
            f"port={self.port}",
            f"unix_socket_directories={self.root}",
        ]
        command = [self._bin / "postgres", "-D", data]
        for setting in (*settings, *_FAST):
            command += ["-c", setting]
        log = (self.root / "server.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=log, cwd=self.root, **self._user())
        log.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.admin_url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start: {self.log()[-2000:]}") from None
                time.sleep(0.05)

    def log(self) -> str:
        return (self.root / "server.log").read_text(errors="replace")

    def halt(self) -> None:
        """Fast shutdown (SIGINT: sessions are disconnected); the data stays for `launch`."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(2)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def stop(self) -> None:
        """Halt, then remove the server's files."""
        self.halt()
        shutil.rmtree(self.root, ignore_errors=True)

    def execute(self, statement: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(statement)  # type: ignore[arg-type]  # test-made identifiers, no user input

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A new empty database for one test, dropped (its sessions closed) afterwards."""
        name = f"streamd_test_{next(self._names)}"
        self.execute(f"CREATE DATABASE {name}")
        try:
            yield self.url(name)
        finally:
            self.execute(f"DROP DATABASE {name} WITH (FORCE)")


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()
