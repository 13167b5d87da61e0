"""What a running bot holds: the configuration, the store and one client per provider.

With no ``stopbot.yaml`` (and no ``STOPBOT_CONFIG``), or one that names no ``providers:``,
the bot runs on the embedded estate (:mod:`bot.estate`): the sample resources on the
provider simulators, the file's other keys laid over it. The simulators are those of a
playground running on the same database when there is one (so ``stopbot stop web-1``
there is seen in the page, and ``stopbot status`` after it says so), else simulators
started in-process on a free loopback port. Nothing real can be stopped that way, which
is the point.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from bot.config import (
    Settings,
    StopbotConfig,
    configured_database_url,
    parse_config,
    read_config_document,
)
from bot.estate import PlaygroundNote, embedded_document, over_estate
from bot.store import Store, open_store
from providers.base import Provider, Resource, utcnow
from providers.registry import build_provider
from providers.simulators.server import SimulatorServer

__all__ = ["BUILT_IN", "Runtime", "uses_estate"]

log = logging.getLogger(__name__)

BUILT_IN = "<built-in simulators>"


def uses_estate(document: Any) -> bool:
    """Whether a configuration document runs on the embedded estate (it names no
    providers of its own)."""
    return not (isinstance(document, dict) and document.get("providers"))


@dataclass
class Runtime:
    settings: Settings
    config: StopbotConfig
    config_source: str
    store: Store
    providers: dict[str, Provider] = field(default_factory=dict)
    simulators: SimulatorServer | None = None
    clock: Callable[[], dt.datetime] = utcnow
    playground: PlaygroundNote | None = None
    """The running playground whose simulators this runtime talks to, if any."""

    @classmethod
    def open(cls, settings: Settings, *, with_store: bool = True) -> Runtime:
        """Load the configuration (or the embedded estate), open the store, build clients."""
        path = settings.config_path()
        document = None
        if settings.stopbot_config is not None or path.exists():
            document = read_config_document(path)
        simulators = None
        note = None
        clock: Callable[[], dt.datetime] = utcnow
        if not uses_estate(document):
            config = parse_config(document, str(path))
            source = str(path)
        else:
            location = settings.store_location(configured_database_url(path))
            note = PlaygroundNote.running(location)
            if note is not None:
                url, started = note.simulators_url, note.started
                try:
                    offset = note.clock_offset()
                except httpx.HTTPError:  # it stopped since: its estate, on the wall clock
                    offset = dt.timedelta(0)

                def clock() -> dt.datetime:
                    return utcnow() + offset

                log.info("using the simulators of the playground at %s", url)
            else:
                simulators = SimulatorServer()
                url, started = simulators.start(), utcnow()
                log.info("using the built-in simulators at %s", url)
            source = BUILT_IN if document is None else f"{path} on {BUILT_IN}"
            config = parse_config(
                over_estate(embedded_document(url, started), document),
                str(path) if document is not None else BUILT_IN,
                env=None if document is not None else {},
            )
        store = open_store(
            settings.store_location(config.database_url) if with_store else ":memory:",
            clock=clock if note is not None else None,
        )
        providers = {p.name: build_provider(p, http=config.http) for p in config.providers}
        return cls(settings, config, source, store, providers, simulators, clock, note)

    def provider_for(self, resource: Resource) -> Provider:
        return self.providers[resource.provider]

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()
        self.store.close()
        if self.simulators is not None:
            self.simulators.stop()
