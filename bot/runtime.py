"""What a running bot holds: the configuration, the store and one client per provider.

With no ``stopbot.yaml`` (and no ``STOPBOT_CONFIG``), the bot runs on its embedded
defaults: the provider simulators, started in-process on a free loopback port, and
the sample estate they serve. Nothing real can be stopped that way, which is the point.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from bot.config import Settings, StopbotConfig, load_config, parse_config
from bot.store import Store, open_store
from providers.base import Provider, Resource
from providers.registry import build_provider
from providers.simulators.samples import sample_config
from providers.simulators.server import SimulatorServer

__all__ = ["BUILT_IN", "Runtime"]

log = logging.getLogger(__name__)

BUILT_IN = "<built-in simulators>"


@dataclass
class Runtime:
    settings: Settings
    config: StopbotConfig
    config_source: str
    store: Store
    providers: dict[str, Provider] = field(default_factory=dict)
    simulators: SimulatorServer | None = None

    @classmethod
    def open(cls, settings: Settings, *, with_store: bool = True) -> Runtime:
        """Load the configuration (or start the simulators), open the store, build clients."""
        path = settings.config_path()
        simulators = None
        if settings.stopbot_config is None and not path.exists():
            simulators = SimulatorServer()
            url = simulators.start()
            log.info("no %s: using the built-in simulators at %s", path, url)
            config = parse_config(sample_config(url), BUILT_IN, env={})
            source = BUILT_IN
        else:
            config = load_config(path)
            source = str(path)
        store = open_store(
            settings.store_location(config.database_url) if with_store else ":memory:"
        )
        providers = {p.name: build_provider(p, http=config.http) for p in config.providers}
        return cls(settings, config, source, store, providers, simulators)

    def provider_for(self, resource: Resource) -> Provider:
        return self.providers[resource.provider]

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()
        self.store.close()
        if self.simulators is not None:
            self.simulators.stop()
