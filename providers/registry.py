"""Build provider clients from their configuration entries."""

from __future__ import annotations

import httpx

from providers.base import Provider, ProviderConfigBase
from providers.feldera import FelderaConfig, FelderaProvider
from providers.http import HttpSettings
from providers.okeanos import OkeanosConfig, OkeanosProvider
from providers.openstack import NovaProvider, OpenStackConfig
from providers.pacing import RequestGate
from providers.qovery import QoveryConfig, QoveryProvider

__all__ = ["build_provider"]


def build_provider(
    config: ProviderConfigBase,
    *,
    http: HttpSettings | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    gate: RequestGate | None = None,
) -> Provider:
    """The client for one ``providers:`` entry of ``stopbot.yaml``; ``gate`` replaces the
    one its ``requests`` limits would make (tests give one a clock they move)."""
    if isinstance(config, QoveryConfig):
        return QoveryProvider(config, http=http, transport=transport, gate=gate)
    if isinstance(config, OpenStackConfig):
        return NovaProvider(config, http=http, transport=transport, gate=gate)
    if isinstance(config, OkeanosConfig):
        return OkeanosProvider(config, http=http, transport=transport, gate=gate)
    if isinstance(config, FelderaConfig):
        return FelderaProvider(config, http=http, transport=transport, gate=gate)
    raise TypeError(f"no provider client for {type(config).__name__}")
