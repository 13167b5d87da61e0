"""Discovery: the resources of provider accounts declared with ``discover:``, found by
listing them, so that a cluster created yesterday is stopped tonight.

A refresh makes one list per discovered account (:meth:`Provider.list`, paged as its API
pages) and keeps what it found in the store, one snapshot per account
(:class:`~bot.store.base.DiscoveryStore`): every replica and a restarted process read the
same snapshot, and only the leader lists periodically (every ``discovery.interval``);
anyone may ask for a refresh now (each face has a refresh command).

What a snapshot holds becomes resources beside the configured ones, in
``config.resources``, so that every rule (lists, schedules, approvals, locks) sees them
the same way:

* a configured resource with the same provider and id wins: it keeps its name and its
  rules, and the provider's tags are read under its own (so a provider-side opt-out tag
  counts for it too);
* a discovered resource is named by the provider's own name where that name is unique
  among discovered resources, free among configured names and a valid resource name;
  else ``provider:id`` (it always answers to ``provider:id`` as well), or
  ``provider:id/instance`` for a ~okeanos application deployed on several instances;
* a resource gone at the provider leaves with the next refresh: the refresh notes it once
  (logged, and told to whoever asked for the refresh), never again.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.config import NAME_LIMIT, NAME_PATTERN, ResourceConfig, StopbotConfig
from bot.store import Store
from providers.base import DiscoveredResource, DiscoverFilter, Provider, utcnow
from providers.errors import ProviderError

__all__ = ["Discovery", "Refreshed"]

log = logging.getLogger(__name__)

_NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True)
class Refreshed:
    """What one account's refresh did: how many resources it found (None: the list
    failed, ``error`` says why, and the previous snapshot is kept), which appeared and
    which are gone since the previous snapshot (by ``provider:id`` and the provider's
    name)."""

    provider: str
    found: int | None
    added: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    error: str | None = None


def _item_key(item: Mapping[str, Any]) -> tuple[str, str]:
    """A snapshot item's id, and its ~okeanos lambda instance (see :func:`_key`)."""
    options = item.get("options")
    instance = options.get("lambda_instance_id") if isinstance(options, dict) else None
    return str(item.get("id")), str(instance or "")


def _label(provider: str, item: Mapping[str, Any]) -> str:
    name, rid = str(item.get("name") or ""), str(item.get("id"))
    return f"{provider}:{rid}" + (f" ({name})" if name and name != rid else "")


class Discovery:
    """The discovered accounts of one bot: their refresh and their snapshot, laid over
    the configured resources."""

    def __init__(
        self,
        config: StopbotConfig,
        store: Store,
        providers: Mapping[str, Provider],
        *,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.config = config
        self.store = store
        self.providers = providers
        self.clock = clock
        self.configured = config.configured_resources()
        self._loaded: dict[str, dt.datetime] | None = None
        self._tried_at: dt.datetime | None = None
        # One refresh at a time in a process (the leader's and someone's /stop refresh):
        # each compares with the snapshot the one before it saved, so a note is made once.
        self._refreshing = asyncio.Lock()

    def filters(self) -> dict[str, DiscoverFilter]:
        """The discovered accounts, each with what discovery keeps of it."""
        found = {}
        for p in self.config.providers:
            kept = p.discover_filter()
            if kept is not None and p.name in self.providers:
                found[p.name] = kept
        return found

    @property
    def enabled(self) -> bool:
        return bool(self.filters())

    # -- refresh --------------------------------------------------------------------

    def due(self) -> bool:
        """Whether an account's snapshot is older than ``discovery.interval`` (or missing)."""
        accounts = self.filters()
        if not accounts:
            return False
        interval = self.config.discovery.interval
        if self._tried_at is not None and self.clock() - self._tried_at < interval:
            return False  # an account that failed is tried again an interval later, not at once
        taken = self.store.discovered_at()
        stamps = [taken.get(name) for name in accounts]
        if any(at is None for at in stamps):
            return True
        oldest = min(at for at in stamps if at is not None)
        return self.clock() - oldest >= interval

    async def refresh_if_older(self, age: dt.timedelta) -> list[Refreshed] | None:
        """:meth:`refresh`, unless every account's snapshot is younger than ``age`` (several
        schedules firing together share one refresh); None when it did not."""
        accounts = self.filters()
        if not accounts:
            return None
        taken = self.store.discovered_at()
        stamps = [taken.get(name) for name in accounts]
        if all(at is not None and self.clock() - at < age for at in stamps):
            return None
        return await self.refresh()

    async def refresh(self) -> list[Refreshed]:
        """List every discovered account now (all at once), keep each snapshot, and lay
        them over the configured resources."""
        async with self._refreshing:
            return await self._refresh()

    async def _refresh(self) -> list[Refreshed]:
        self._tried_at = self.clock()
        accounts = self.filters()
        previous = self.store.discovered()
        names = sorted(accounts)
        answers = await asyncio.gather(
            *(self.providers[name].list() for name in names), return_exceptions=True
        )
        results = []
        for name, answer in zip(names, answers, strict=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, ProviderError | TimeoutError | OSError):
                    raise answer
                log.warning(
                    "discovery: %s could not be listed; its last snapshot is kept",
                    name,
                    extra={"provider": name, "error": str(answer)},
                )
                results.append(Refreshed(name, None, error=str(answer) or type(answer).__name__))
                continue
            results.append(self._save(name, accounts[name], answer, previous.get(name)))
        self.load(force=True)
        return results

    def _save(
        self,
        name: str,
        keep: DiscoverFilter,
        found: Sequence[DiscoveredResource],
        previous: tuple[dt.datetime, list[dict[str, Any]]] | None,
    ) -> Refreshed:
        items = [r.model_dump(mode="json") for r in found if keep.keeps(r)]
        self.store.save_discovered(name, items)
        before = {_item_key(i): i for i in previous[1]} if previous is not None else {}
        now = {_item_key(i): i for i in items}
        gone = [_label(name, i) for key, i in before.items() if key not in now]
        added = [_label(name, i) for key, i in now.items() if key not in before]
        if gone:
            # Said once: the next refresh compares with this snapshot, where they are not.
            log.warning(
                "discovery: %d resource(s) of %s are gone at the provider and leave lists "
                "and schedules: %s",
                len(gone),
                name,
                ", ".join(gone),
                extra={"provider": name, "gone": gone},
            )
        if previous is not None and added:
            log.info(
                "discovery: %d new resource(s) at %s",
                len(added),
                name,
                extra={"provider": name, "added": added},
            )
        return Refreshed(name, len(items), added=added if previous is not None else [], gone=gone)

    # -- the snapshot over the configuration ----------------------------------------

    def load(self, *, force: bool = False) -> bool:
        """Lay the store's snapshots over the configured resources, when they changed
        since the last time (``force``: anyway); whether it did."""
        accounts = self.filters()
        if not accounts and self._loaded is None:
            return False
        stamps = {name: at for name, at in self.store.discovered_at().items() if name in accounts}
        if not force and stamps == self._loaded:
            return False
        snapshots = {
            name: snapshot for name, snapshot in self.store.discovered().items() if name in accounts
        }
        self._loaded = {name: at for name, (at, _) in snapshots.items()}
        self.config.resources = self.merged({name: items for name, (_, items) in snapshots.items()})
        return True

    def merged(self, snapshots: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[ResourceConfig]:
        """The configured resources, then the discovered ones they do not name (see the
        module's docstring for names and who wins)."""
        configured = list(self.configured)
        at = {_key(r.provider, r.id, r.lambda_instance_id): i for i, r in enumerate(configured)}
        taken = {r.name for r in configured}
        found: list[DiscoveredResource] = []
        for name in sorted(snapshots):
            for item in snapshots[name]:
                try:
                    resource = DiscoveredResource.model_validate(item)
                except ValueError:
                    log.warning("discovery: an unreadable resource of %s is left out", name)
                    continue
                resource = resource.model_copy(update={"provider": name})
                instance = resource.options.get("lambda_instance_id")
                where = at.get(_key(name, resource.id, instance))
                if where is None:
                    found.append(resource)
                elif resource.tags:
                    mine = configured[where]
                    configured[where] = mine.model_copy(
                        update={"tags": {**resource.tags, **mine.tags}}
                    )
        names = collections.Counter(r.name for r in found)
        ids = collections.Counter(
            [(r.provider, r.id) for r in found] + [(r.provider, r.id) for r in configured]
        )
        # Copies of one resource with every default: model_construct would work each
        # default out again (inspecting its factory), a second per 2,500 resources.
        template = ResourceConfig.model_construct(name="", provider="", id="")
        discovered = []
        for r in found:
            instance = r.options.get("lambda_instance_id")
            if ids[(r.provider, r.id)] > 1:
                # One ~okeanos application deployed on several instances: one resource each,
                # and ``provider:id`` already names another of them.
                fallback = f"{r.provider}:{r.id}/{instance}"
            else:
                fallback = f"{r.provider}:{r.id}"
            own = r.name
            unique = (
                names[own] == 1
                and own not in taken
                and len(own) <= NAME_LIMIT
                and _NAME.match(own) is not None
            )
            discovered.append(
                template.model_copy(
                    update={
                        "name": own if unique else fallback,
                        "provider": r.provider,
                        "id": r.id,
                        "tags": dict(r.tags),
                        "lambda_instance_id": instance,
                    }
                )
            )
        return configured + discovered


def _key(provider: str, resource_id: str, instance: str | None) -> tuple[str, str, str]:
    """What one resource is: its account, its id and, on ~okeanos, its lambda instance (an
    application deployed on two instances is two resources)."""
    return provider, resource_id, instance or ""
