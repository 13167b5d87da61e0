"""SQLite's checkpoints, on a thread of their own rather than in a commit.

In WAL mode a commit appends the pages it changed to the log; a checkpoint copies them back
into the database file (and, with ``synchronous = NORMAL``, fsyncs both). By default SQLite
runs one inside whichever commit takes the log past 1,000 pages: here, a commit made on the
event loop, since the store's calls run there (bot/store/background.py). A night of 10,000
stops made ~2 commits a stop; the checkpoints inside them were the loop's time, fsyncs
included, while the stops waited to be sent.

So the store turns SQLite's own off (``wal_autocheckpoint = 0`` on its connection) and this
thread checkpoints instead, on a connection of its own, :data:`EVERY` seconds after a commit
tells it there is something to copy. A ``PASSIVE`` checkpoint copies what no reader still
needs and never waits for a lock; it runs beside the loop's commits, since sqlite3 lets go of
the interpreter's lock inside SQLite. Nothing about durability changes: a commit is in the
log before the store answers, whoever copies it later; a process killed mid-checkpoint leaves
a log SQLite replays at the next open. The store's own connection closes last and, as the
last connection, checkpoints what is left and removes the log, as SQLite always does.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

__all__ = ["EVERY", "IDLE_CHECK", "Checkpoints"]

log = logging.getLogger(__name__)

EVERY = 0.25
"""Seconds between a commit's call for a checkpoint and the checkpoint: the commits of that
time share it (a night's loop commits ~500 times a second)."""
IDLE_CHECK = 30.0
"""Seconds between checkpoints when no commit asked for one: writes the store did not tell
about (another process's, an autocommitted statement) are copied back too."""


class Checkpoints:
    """A thread checkpointing one database file; :meth:`committed` after each commit,
    :meth:`close` before the store's own connection closes (so that it is the last)."""

    def __init__(self, location: str) -> None:
        self.location = location
        # Opened here, not on the thread: a database it cannot open is the caller's to
        # know now (it then keeps SQLite's own checkpoints).
        self._conn = sqlite3.connect(location, isolation_level=None, check_same_thread=False)
        self._due = threading.Event()
        self._closed = threading.Event()
        self.done = 0
        """Checkpoints run so far (tests wait on :meth:`wait_for`)."""
        self.last: tuple[int, int] = (0, 0)
        """The last one's pages: in the log, and copied back from it into the database."""
        self._ran = threading.Condition()
        self._thread = threading.Thread(
            target=self._run, name="stopbot-sqlite-checkpoints", daemon=True
        )
        try:
            self._thread.start()
        except RuntimeError:  # no thread to be had: nobody else closes the connection
            self._conn.close()
            raise

    def committed(self) -> None:
        """A commit added to the log: a checkpoint follows within :data:`EVERY` seconds."""
        if not self._due.is_set():
            self._due.set()

    def wait_for(self, done: int, timeout: float) -> bool:
        """Whether at least ``done`` checkpoints ran within ``timeout`` seconds."""
        with self._ran:
            return self._ran.wait_for(lambda: self.done >= done, timeout)

    def stop(self) -> None:
        """Tell the thread to stop after the checkpoint it is running, if any (its
        connection closes then); returns at once."""
        self._closed.set()
        self._due.set()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and wait for it (and so for its connection to close). Idempotent."""
        self.stop()
        if self._thread is threading.current_thread():
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("the SQLite checkpoint thread did not stop in %.0f s", timeout)

    def _run(self) -> None:
        try:
            while not self._closed.is_set():
                self._due.wait(IDLE_CHECK)
                # The commits of the next EVERY seconds share this checkpoint (stopping
                # cuts the wait short: the store's last close checkpoints what is left).
                if self._closed.wait(EVERY):
                    return
                self._due.clear()
                self._checkpoint()
        finally:
            self._conn.close()

    def _checkpoint(self) -> None:
        try:
            busy, pages, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # tried again at the next commit's call
            log.warning("SQLite checkpoint failed: %s", exc, extra={"database": self.location})
            return
        with self._ran:
            self.done += 1
            self.last = (int(pages), int(copied))
            self._ran.notify_all()
        if busy:
            log.debug("SQLite checkpoint could not finish: a reader or a writer held it")
