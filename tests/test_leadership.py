"""One leader among processes sharing a PostgreSQL store: taken over when the leader is
killed, paused or stops; schedule changes heard by every process."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.leadership import Sole
from bot.store import Store, open_store
from bot.store.postgres_leadership import LEADER_CLASS, AdvisoryLeadership
from tests.pg import PostgresServer

TIMEOUT = 1.0  # a paused leader loses the lead after this


@pytest.fixture
def pg_store(pg_location: str) -> Iterator[Store]:
    store = open_store(pg_location)
    yield store
    store.close()


def elect(store: Store) -> AdvisoryLeadership:
    leadership = store.leadership(TIMEOUT)
    assert isinstance(leadership, AdvisoryLeadership)
    return leadership


class Seen:
    def __init__(self) -> None:
        self.leads = 0
        self.changes = 0

    async def lead(self) -> None:
        self.leads += 1

    async def change(self) -> None:
        self.changes += 1


@pytest.fixture
async def pair(pg_store: Store) -> AsyncIterator[tuple[AdvisoryLeadership, AdvisoryLeadership]]:
    first, second = elect(pg_store), elect(pg_store)
    yield first, second
    await first.stop()
    await second.stop()


async def until(condition: object, within: float) -> float:
    """Seconds until ``condition()`` holds, failing after ``within``."""
    start = time.monotonic()
    while not condition():  # type: ignore[operator]
        if time.monotonic() - start > within:
            raise AssertionError(f"not within {within} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def test_sqlite_processes_all_lead(tmp_path: Path) -> None:
    """On SQLite every process does the duties (the file's locks decide), as before."""
    store = open_store(tmp_path / "stopbot.db")
    sole = store.leadership(TIMEOUT)
    store.close()
    assert isinstance(sole, Sole)
    assert (sole.leading, sole.role) == (True, "sole")


async def test_one_leader_and_a_handover_when_it_stops(
    pair: tuple[AdvisoryLeadership, AdvisoryLeadership],
) -> None:
    """Of two processes one leads, the other follows; when the leader stops, the follower
    leads at once, and its on_lead runs once."""
    first, second = pair
    seen = [Seen(), Seen()]
    for leadership, s in zip(pair, seen, strict=True):
        leadership.follow(on_lead=s.lead, on_change=s.change)
    await first.start()
    await until(lambda: first.leading, 5)
    await second.start()
    await asyncio.sleep(3 * second.poll)
    assert (first.role, second.role) == ("leader", "follower")
    await first.stop()
    assert first.leading is False
    await until(lambda: second.leading, second.poll + 2)
    await asyncio.sleep(0.05)
    assert [s.leads for s in seen] == [1, 1]


async def test_a_schedule_change_reaches_every_process(
    pair: tuple[AdvisoryLeadership, AdvisoryLeadership],
) -> None:
    """changed() on a follower reaches the leader (and the follower itself) by NOTIFY."""
    first, second = pair
    seen = [Seen(), Seen()]
    for leadership, s in zip(pair, seen, strict=True):
        leadership.follow(on_lead=s.lead, on_change=s.change)
        await leadership.start()
    await until(lambda: first.leading or second.leading, 5)
    await asyncio.sleep(2 * first.poll)  # both are listening
    follower = second if first.leading else first
    await follower.changed()
    await until(lambda: seen[0].changes == 1 and seen[1].changes == 1, 3)


async def test_a_leader_that_loses_its_connection_steps_down(
    pg_store: Store, pg_location: str, postgres_server: PostgresServer
) -> None:
    """When the server ends the leader's session (a failover, an admin), the process knows
    it no longer leads before anyone else can take the lock, then takes part again."""
    import psycopg

    leadership = elect(pg_store)
    await leadership.start()
    try:
        await until(lambda: leadership.leading, 5)
        with psycopg.connect(postgres_server.url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'stopbot-leader' AND pid <> pg_backend_pid()"
            )
        await until(lambda: not leadership.leading, TIMEOUT + 1)
        await until(lambda: leadership.leading, 5)
    finally:
        await leadership.stop()


CONTENDER = textwrap.dedent(
    """
    import asyncio, sys
    from bot.store import open_store

    async def main():
        leadership = open_store(sys.argv[1]).leadership(float(sys.argv[2]))
        await leadership.start()
        while not leadership.leading:
            await asyncio.sleep(0.02)
        print("leading", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


@pytest.fixture
def leader_process(pg_store: Store, pg_location: str) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(  # noqa: S603 -- our own interpreter and code
        [sys.executable, "-c", CONTENDER, pg_location, str(TIMEOUT)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "leading"
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
        process.wait()


async def test_a_killed_leader_is_replaced_within_two_seconds(
    pg_store: Store, leader_process: subprocess.Popen[str]
) -> None:
    """SIGKILL on the leader: its session ends with it, and a follower leads within 2 s."""
    follower = elect(pg_store)
    await follower.start()
    try:
        await asyncio.sleep(3 * follower.poll)
        assert follower.role == "follower"
        leader_process.kill()
        await until(lambda: follower.leading, 2)
    finally:
        await follower.stop()


async def test_a_paused_leader_is_replaced_and_steps_down_when_it_resumes(
    pg_store: Store, postgres_server: PostgresServer, leader_process: subprocess.Popen[str]
) -> None:
    """SIGSTOP on the leader: the server ends its idle session after the timeout and a
    follower leads within the timeout + 2 s; the old leader, resumed, does not lead again
    while the new one lives (its session, and its lock, are gone)."""
    import psycopg

    follower = elect(pg_store)
    await follower.start()
    try:
        await asyncio.sleep(3 * follower.poll)
        leader_process.send_signal(signal.SIGSTOP)
        await until(lambda: follower.leading, TIMEOUT + 2)
        leader_process.send_signal(signal.SIGCONT)
        await asyncio.sleep(TIMEOUT)
        assert follower.leading
        with psycopg.connect(postgres_server.url, autocommit=True) as admin:
            holders = admin.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND classid = %s",
                (LEADER_CLASS,),
            ).fetchone()
        assert holders == (1,)
    finally:
        await follower.stop()
