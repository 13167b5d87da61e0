"""The store: every record the bot keeps, behind one interface (:mod:`bot.store.base`),
with its error tree (:mod:`bot.store.errors`) and one module per backend.

The rest of the bot holds a :class:`Store` and opens one with :func:`open_store` from its
location: ``STOPBOT_DATABASE_URL`` (or ``database_url`` in ``stopbot.yaml``), else the file
in ``STOPBOT_DB``. A backend is one module implementing :class:`Store` and one line in
``BACKENDS`` per scheme of the locations it serves (``""``, no scheme, is a file path).
"""

from __future__ import annotations

import os
import re

from bot.store.base import Clock, Store, StoreCounts
from bot.store.errors import (
    StoreError,
    StoreLocationError,
    StoreSchemaError,
    StoreUnavailableError,
)
from bot.store.postgres import PostgresStore, shown_location
from bot.store.sqlite import SQLiteStore

__all__ = [
    "BACKENDS",
    "Store",
    "StoreCounts",
    "StoreError",
    "StoreLocationError",
    "StoreSchemaError",
    "StoreUnavailableError",
    "backend_for",
    "open_store",
    "shown_location",
    "store_exists",
]

BACKENDS: dict[str, type[Store]] = {
    "": SQLiteStore,
    "postgresql": PostgresStore,
    "postgres": PostgresStore,
}

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def backend_for(location: str) -> type[Store]:
    """The backend serving ``location``: by its URL scheme, else (a file path) SQLite."""
    match = _SCHEME.match(location)
    scheme = match.group(1).lower() if match else ""
    try:
        return BACKENDS[scheme]
    except KeyError:
        # Only the scheme is named: the rest of a URL may carry a password.
        raise StoreLocationError(
            f"this stopbot has no store for {scheme}:// locations; give a postgresql:// "
            "URL or the path of a SQLite file"
        ) from None


def open_store(location: str | os.PathLike[str], *, clock: Clock | None = None) -> Store:
    """The store at ``location``, created (and migrated) if need be; its now is ``clock``,
    else the backend's own (the host's for SQLite, the database server's for PostgreSQL)."""
    text = os.fspath(location)
    backend = backend_for(text)
    return backend(text) if clock is None else backend(text, clock=clock)


def store_exists(location: str | os.PathLike[str]) -> bool:
    """Whether a store is at ``location`` already (read commands open no new one)."""
    text = os.fspath(location)
    return backend_for(text).exists(text)
