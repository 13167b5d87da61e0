"""The store: every record the bot keeps, behind one interface (:mod:`bot.store.base`),
with its error tree (:mod:`bot.store.errors`) and one module per backend.

The rest of the bot holds a :class:`Store` and opens one with :func:`open_store` from the
location in ``STOPBOT_DB``. A backend is one module implementing :class:`Store` and one line
in ``BACKENDS``: the scheme of the locations it serves (``""``, no scheme, is a file path).
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
from bot.store.sqlite import SQLiteStore
from providers.base import utcnow

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
    "store_exists",
]

BACKENDS: dict[str, type[Store]] = {"": SQLiteStore}

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
            f"STOPBOT_DB: this stopbot has no store for {scheme}:// locations; "
            "give the path of a SQLite file"
        ) from None


def open_store(location: str | os.PathLike[str], *, clock: Clock = utcnow) -> Store:
    """The store at ``location``, created (and migrated) if need be."""
    text = os.fspath(location)
    return backend_for(text)(text, clock=clock)


def store_exists(location: str | os.PathLike[str]) -> bool:
    """Whether a store is at ``location`` already (read commands open no new one)."""
    text = os.fspath(location)
    return backend_for(text).exists(text)
