"""The one list of providers: for each, its ``stopbot.yaml`` entry, its client, its simulator.

Adding a provider is one entry in :data:`PROVIDERS`: the configuration's ``providers:``
union (``bot.config.ProviderConfig``), the clients :func:`build_provider` makes and the
APIs the simulator server mounts are all read from it, so none of them lists providers
again.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Generic, Protocol, TypeVar

import httpx

from providers.base import Provider, ProviderConfigBase
from providers.feldera import FelderaConfig, FelderaProvider
from providers.http import HttpSettings
from providers.okeanos import OkeanosConfig, OkeanosProvider
from providers.openstack import NovaProvider, OpenStackConfig
from providers.pacing import RequestGate
from providers.qovery import QoveryConfig, QoveryProvider
from providers.simulators.common import Simulator
from providers.simulators.feldera import FelderaSimulator
from providers.simulators.okeanos import OkeanosSimulator
from providers.simulators.openstack import NovaSimulator
from providers.simulators.qovery import QoverySimulator

__all__ = ["PROVIDERS", "ProviderKind", "build_provider", "kind_of"]

ConfigT = TypeVar("ConfigT", bound=ProviderConfigBase)
ConfigT_contra = TypeVar("ConfigT_contra", bound=ProviderConfigBase, contravariant=True)


class ClientClass(Protocol[ConfigT_contra]):
    """A provider client class: its ``type`` tag, and built from its configuration entry."""

    @property
    def type(self) -> str: ...

    def __call__(
        self,
        config: ConfigT_contra,
        *,
        http: HttpSettings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        gate: RequestGate | None = None,
    ) -> Provider: ...


@dataclasses.dataclass(frozen=True)
class ProviderKind(Generic[ConfigT]):
    """One kind of provider: the model of its ``providers:`` entry, the client built from
    such an entry, and the simulator of its API."""

    config: type[ConfigT]
    client: ClientClass[ConfigT]
    simulator: type[Simulator]

    def __post_init__(self) -> None:
        # The entry's ``type:`` tag picks the client: a model and a client that disagree
        # would build the wrong client, so they are refused when the list is read.
        tags = typing.get_args(self.config.model_fields["type"].annotation)
        if tags != (self.client.type,):
            raise TypeError(
                f"{self.config.__name__}'s type {tags} is not its client's {self.client.type!r}"
            )

    @property
    def type(self) -> str:
        """The ``type:`` of its entries in ``stopbot.yaml``."""
        return self.client.type


PROVIDERS: tuple[ProviderKind[Any], ...] = (
    ProviderKind(QoveryConfig, QoveryProvider, QoverySimulator),
    ProviderKind(OpenStackConfig, NovaProvider, NovaSimulator),
    ProviderKind(OkeanosConfig, OkeanosProvider, OkeanosSimulator),
    ProviderKind(FelderaConfig, FelderaProvider, FelderaSimulator),
)
"""Every provider, in the order configuration errors list their types."""

_BY_TYPE = {kind.type: kind for kind in PROVIDERS}


def kind_of(provider_type: str) -> ProviderKind[Any]:
    """The provider kind whose entries have ``type: provider_type``."""
    return _BY_TYPE[provider_type]


def build_provider(
    config: ProviderConfigBase,
    *,
    http: HttpSettings | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    gate: RequestGate | None = None,
) -> Provider:
    """The client for one ``providers:`` entry of ``stopbot.yaml``; ``gate`` replaces the
    one its ``requests`` limits would make (tests give one a clock they move)."""
    kind = _BY_TYPE.get(config.type)
    if kind is None or not isinstance(config, kind.config):
        raise TypeError(f"no provider client for {type(config).__name__}")
    return kind.client(config, http=http, transport=transport, gate=gate)
