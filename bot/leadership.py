"""Which process does the time-driven duties: schedule fires and warnings, missed runs,
drift watch, approval expiry, lock-expiry warnings.

One leader at a time does them, so that N replicas on one PostgreSQL do not all fire,
warn and expire the same things at the same instant. Leadership is a convenience, never
the guarantee: exactly-once still comes from the store (one run row per fire, claims,
compare-and-sets), so two processes that both believe they lead for a moment (a paused
leader waking up) double nothing; the one that lost its claim does nothing.

* :class:`Sole`: every process leads (SQLite, one host: the store's locks decide, as
  they always have).
* ``AdvisoryLeadership`` (PostgreSQL, bot/store/postgres_leadership.py, given by the
  store's :meth:`~bot.store.Store.leadership`): the leader holds a session-level advisory
  lock on a connection of its own. The lock goes with the session, so a killed leader's lock is
  released by the server as soon as its connection drops, and a paused one's after
  ``idle_session_timeout`` (set on that session: the leader pings more often than that
  while it runs). Followers try the lock every ``poll`` seconds. Every process LISTENs on
  that connection for schedules changed elsewhere (:meth:`Leadership.changed` NOTIFYs),
  so a schedule added through one replica reaches the leader at once. PgBouncer in
  transaction pooling mode cannot carry a session lock: point this connection at the
  server itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

__all__ = ["Callback", "Leadership", "Sole"]

Callback = Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


class Leadership:
    """Whether this process does the time-driven duties now."""

    def __init__(self) -> None:
        self._on_lead: Callback = _nothing
        self._on_change: Callback = _nothing

    @property
    def leading(self) -> bool:
        raise NotImplementedError

    @property
    def role(self) -> str:
        """For /healthz: ``leader``, ``follower`` or ``sole`` (every process leads)."""
        raise NotImplementedError

    def follow(self, *, on_lead: Callback, on_change: Callback) -> None:
        """``on_lead`` runs when this process becomes the leader (catch up on what is due);
        ``on_change`` when some process changed the schedules."""
        self._on_lead = on_lead
        self._on_change = on_change

    async def start(self) -> None:
        """Take part (the first ``on_lead`` may run before this returns)."""

    async def stop(self) -> None:
        """Step down and leave (the next leader takes over at once)."""

    async def changed(self) -> None:
        """The schedules changed here (and this process has rebuilt its own jobs): the
        other processes, the leader among them, hear of it."""


class Sole(Leadership):
    """Every process leads: the store alone keeps what is done once (SQLite)."""

    @property
    def leading(self) -> bool:
        return True

    @property
    def role(self) -> str:
        return "sole"
