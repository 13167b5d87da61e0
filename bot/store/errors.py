"""Every failure the store reports, as one small tree, whatever the backend.

    StoreError                  the store cannot do what was asked; the message names the database
    ├── StoreLocationError      the location (STOPBOT_DB, STOPBOT_DATABASE_URL) names nothing this
    │                           stopbot can use: a backend it does not have, something that is
    │                           no database, a URL it cannot read (fix the setting)
    ├── StoreSchemaError        the database was written by a newer stopbot (upgrade stopbot)
    └── StoreUnavailableError   the database does not answer now: closed, busy past the wait,
                                unreachable, out of disk (a later try may work)

Callers catch these, never a backend's own exceptions (``sqlite3.Error``, a driver's), so
that a second backend changes nothing outside its module: the health check and the metrics
report a :class:`StoreUnavailableError` as "down", the command line prints any of them as
one line. A backend's failure that fits no branch (a constraint the database refused: a
bug) is a plain :class:`StoreError`, with the backend's error as its cause.
"""

from __future__ import annotations

__all__ = ["StoreError", "StoreLocationError", "StoreSchemaError", "StoreUnavailableError"]


class StoreError(Exception):
    """The store cannot do what was asked (the message says which database, and why)."""


class StoreLocationError(StoreError):
    """The location given names no store this stopbot can open (an unknown backend, a file
    that is not a database): a setting to fix, not worth trying again."""


class StoreSchemaError(StoreError):
    """The database's schema is newer than this stopbot knows: it must not write there."""


class StoreUnavailableError(StoreError):
    """The database does not answer now (closed, locked past the wait, unreachable)."""
