"""The one list of providers: configuration entries, clients and simulators from one place."""

from __future__ import annotations

from typing import Any

import pytest

from bot.config import parse_config
from providers.openstack import NovaProvider
from providers.qovery import QoveryConfig
from providers.registry import PROVIDERS, ProviderKind, build_provider
from providers.simulators.qovery import QoverySimulator
from providers.simulators.samples import sample_config
from providers.simulators.server import SimulatorHub


@pytest.mark.parametrize("kind", PROVIDERS, ids=lambda kind: kind.type)
async def test_each_listed_provider_is_configured_built_and_simulated(
    kind: ProviderKind[Any],
) -> None:
    """A listed provider's entry parses to its model and builds its client, and the
    simulator server serves its API."""
    config = parse_config(sample_config("http://127.0.0.1:9"), "<test>", env={})
    entry = next(p for p in config.providers if p.type == kind.type)
    client = build_provider(entry)
    try:
        assert (type(entry), type(client)) == (kind.config, kind.client)
    finally:
        await client.aclose()
    assert isinstance(SimulatorHub()[kind.simulator.name], kind.simulator)


def test_a_model_and_a_client_of_different_types_are_refused() -> None:
    """An entry pairing Qovery's model with Nova's client is refused when the list is read."""
    with pytest.raises(TypeError, match="QoveryConfig's type"):
        ProviderKind(QoveryConfig, NovaProvider, QoverySimulator)
