"""A throwaway PostgreSQL cluster for the test session, and one schema per test.

Unless ``STOPBOT_TEST_DATABASE_URL`` names a server to use, the session starts its own: as
root, ``runuser -u postgres -- initdb`` then ``pg_ctl start`` on a free loopback port (trust
authentication, no fsync), stopped at the end. Where that cannot be (no PostgreSQL binaries
under /usr/lib/postgresql/*/bin, neither root nor postgres), the tests that need it skip
with the reason. Each test gets a schema of its own (``?schema=t_…``), dropped after it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

ENV_URL = "STOPBOT_TEST_DATABASE_URL"


def _binaries() -> Path | None:
    """The newest PostgreSQL's bin directory (Debian's layout)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """A PostgreSQL server for the tests: its URL, and (for the session's own cluster)
    stop and start, to test a database that goes away and comes back."""

    url: str
    data: Path | None = None
    bin: Path | None = None
    port: int = 0
    run_as: list[str] | None = None

    @property
    def ours(self) -> bool:
        return self.data is not None

    def _pg_ctl(self, *args: str) -> None:
        assert self.bin is not None and self.data is not None and self.run_as is not None
        subprocess.run(  # noqa: S603 -- PostgreSQL's own pg_ctl, our arguments
            [*self.run_as, str(self.bin / "pg_ctl"), "-D", str(self.data), *args],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        assert self.data is not None
        options = (
            f"-p {self.port} -k {self.data.parent / 'socket'} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=200"
        )
        self._pg_ctl("-o", options, "-l", str(self.data.parent / "server.log"), "-w", "start")

    def stop(self) -> None:
        self._pg_ctl("-m", "immediate", "-w", "stop")

    def with_schema(self, schema: str) -> str:
        return f"{self.url}{'&' if '?' in self.url else '?'}schema={schema}"


def start_cluster() -> PostgresServer:
    """A new cluster on a free port, or pytest.skip with the reason it cannot be."""
    binaries = _binaries()
    if binaries is None:
        pytest.skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb)")
    if os.geteuid() == 0:
        try:
            postgres = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("no postgres user to run a PostgreSQL cluster as")
        run_as = ["runuser", "-u", "postgres", "--"]
    elif pwd.getpwuid(os.geteuid()).pw_name == "postgres":
        postgres, run_as = pwd.getpwuid(os.geteuid()), []
    else:
        pytest.skip("a PostgreSQL cluster for the tests needs root or the postgres user")
    home = Path(tempfile.mkdtemp(prefix="stopbot-pg-"))
    (home / "socket").mkdir()
    for path in (home, home / "socket"):
        os.chown(path, postgres.pw_uid, postgres.pw_gid)
    data = home / "data"
    subprocess.run(  # noqa: S603 -- PostgreSQL's own initdb, our arguments
        [
            *run_as,
            str(binaries / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = _free_port()
    server = PostgresServer(
        url=f"postgresql://postgres@127.0.0.1:{port}/postgres",
        data=data,
        bin=binaries,
        port=port,
        run_as=run_as,
    )
    server.start()
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL: ``STOPBOT_TEST_DATABASE_URL``, else a throwaway cluster."""
    given = os.environ.get(ENV_URL)
    if given:
        yield PostgresServer(url=given)
        return
    server = start_cluster()
    try:
        yield server
    finally:
        assert server.data is not None
        try:
            server.stop()
        finally:
            shutil.rmtree(server.data.parent, ignore_errors=True)


def drop_schema(server: PostgresServer, schema: str) -> None:
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def pg_schema(postgres_server: PostgresServer) -> Iterator[str]:
    """A schema name of this test's own (not created: the store creates it), dropped after."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield schema
    drop_schema(postgres_server, schema)


@pytest.fixture
def pg_location(postgres_server: PostgresServer, pg_schema: str) -> str:
    """The URL of a fresh, empty store of this test's own."""
    return postgres_server.with_schema(pg_schema)
