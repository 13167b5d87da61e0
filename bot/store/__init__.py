"""The store: every record the bot keeps (see :mod:`bot.store.sqlite`)."""

from bot.store.sqlite import SCHEMA_VERSION, Store, StoreError

__all__ = ["SCHEMA_VERSION", "Store", "StoreError"]
