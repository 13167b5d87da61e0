"""The second baseline of the nightly run: a well-written asyncio script.

What someone would write who knows that a stop is asynchronous: per provider account, fire
every stop at once through one ``httpx.AsyncClient`` with the account's concurrency (a
semaphore of ``concurrency``), then poll that account's list endpoint every
``poll_interval`` until all its resources are stopped. The four accounts go in parallel.
It checks no lock, reads nothing before stopping and records nothing: it is the floor a
tool that does the same stops can reach on these simulators, measured in the same run as
the bot (bench/nightly_run.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from bench.common import BenchError
from providers.simulators.samples import (
    FELDERA_API_KEY,
    NOVA_PASSWORD,
    NOVA_PROJECT,
    NOVA_USER,
    OKEANOS_TOKEN,
    QOVERY_ORG,
    QOVERY_TOKEN,
)

__all__ = ["AsyncScript", "ScriptResult"]


@dataclass(frozen=True)
class ScriptResult:
    wall: float
    calls: int
    stopped: int


class AsyncScript:
    """The stops of ``resources`` (bench/nightly_run.py's estate), as an asyncio script."""

    def __init__(self, sims_url: str, concurrency: int, poll_interval: float) -> None:
        self.url = sims_url
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.calls = 0

    def run(self, resources: Sequence[dict[str, Any]], limit: float) -> ScriptResult:
        """Stop them all, within ``limit`` seconds."""
        return asyncio.run(self._run(resources, limit))

    async def _run(self, resources: Sequence[dict[str, Any]], limit: float) -> ScriptResult:
        groups: dict[str, list[dict[str, Any]]] = {}
        for resource in resources:
            groups.setdefault(resource["provider"], []).append(resource)
        started = time.monotonic()
        async with asyncio.timeout(limit):
            counts = await asyncio.gather(*(self._account(p, group) for p, group in groups.items()))
        return ScriptResult(time.monotonic() - started, self.calls, sum(counts))

    async def _call(self, client: httpx.AsyncClient, method: str, url: str, **kw: Any) -> Any:
        self.calls += 1
        try:
            response = await client.request(method, url, **kw)
        except httpx.HTTPError as exc:
            raise BenchError(f"{method} {url} got no answer: {exc!r}") from None
        if response.status_code >= 400:
            raise BenchError(f"{method} {url} answered {response.status_code}: {response.text}")
        return response.json() if response.content else None

    async def _account(self, provider: str, group: list[dict[str, Any]]) -> int:
        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=60.0, limits=limits) as client:
            stop, stopped = await self._api(provider, client, group)
            room = asyncio.Semaphore(self.concurrency)

            async def one(resource: dict[str, Any]) -> None:
                async with room:
                    await stop(resource)

            await asyncio.gather(*(one(r) for r in group))
            pending = {str(r["id"]) for r in group}
            while pending:
                await asyncio.sleep(self.poll_interval)
                pending -= await stopped()
            return len(group)

    async def _api(
        self, provider: str, client: httpx.AsyncClient, group: list[dict[str, Any]]
    ) -> tuple[Callable[[dict[str, Any]], Awaitable[Any]], Callable[[], Awaitable[set[str]]]]:
        """The stop call and the list read (the ids stopped) of one provider's API."""
        base = self.url
        if provider == "qovery":
            org = f"{base}/qovery/organization/{QOVERY_ORG}"
            client.headers["Authorization"] = f"Token {QOVERY_TOKEN}"

            async def stopped() -> set[str]:
                body = await self._call(client, "GET", f"{org}/cluster/status")
                return {s["cluster_id"] for s in body["results"] if s["status"] == "STOPPED"}

            return (lambda r: self._call(client, "POST", f"{org}/cluster/{r['id']}/stop")), stopped
        if provider == "nova":
            compute = await self._keystone(client)

            async def stopped() -> set[str]:
                found: set[str] = set()
                params: dict[str, str] = {}
                while True:
                    body = await self._call(
                        client, "GET", f"{compute}/servers/detail", params=params
                    )
                    found |= {s["id"] for s in body["servers"] if s["status"] == "SHUTOFF"}
                    links = [
                        link for link in body.get("servers_links", []) if link["rel"] == "next"
                    ]
                    if not body["servers"] or not links:
                        return found
                    params = dict(httpx.URL(links[0]["href"]).params)

            async def stop_server(r: dict[str, Any]) -> Any:
                return await self._call(
                    client, "POST", f"{compute}/servers/{r['id']}/action", json={"os-stop": None}
                )

            return stop_server, stopped
        if provider == "okeanos":
            client.headers["Authorization"] = f"Token {OKEANOS_TOKEN}"
            instances = sorted({str(r["lambda_instance_id"]) for r in group})

            async def stopped() -> set[str]:
                found: set[str] = set()
                for instance in instances:
                    body = await self._call(
                        client, "GET", f"{base}/okeanos/api/lambda-instances/{instance}/"
                    )
                    found |= {a["id"] for a in body["data"][0]["applications"] if not a["started"]}
                return found

            async def stop_app(r: dict[str, Any]) -> Any:
                return await self._call(
                    client,
                    "POST",
                    f"{base}/okeanos/api/apps/{r['id']}/stop/",
                    files={"lambda_instance_id": (None, str(r["lambda_instance_id"]))},
                )

            return stop_app, stopped
        client.headers["Authorization"] = f"Bearer {FELDERA_API_KEY}"

        async def stopped() -> set[str]:
            body = await self._call(
                client, "GET", f"{base}/feldera/v0/pipelines", params={"selector": "status"}
            )
            return {p["name"] for p in body if p["deployment_status"] == "Stopped"}

        async def stop_pipeline(r: dict[str, Any]) -> Any:
            return await self._call(
                client,
                "POST",
                f"{base}/feldera/v0/pipelines/{r['id']}/stop",
                params={"force": "true"},
            )

        return stop_pipeline, stopped

    async def _keystone(self, client: httpx.AsyncClient) -> str:
        """One token; the compute endpoint from its catalog."""
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": NOVA_USER,
                            "domain": {"name": "Default"},
                            "password": NOVA_PASSWORD,
                        }
                    },
                },
                "scope": {"project": {"name": NOVA_PROJECT, "domain": {"name": "Default"}}},
            }
        }
        self.calls += 1
        response = await client.post(f"{self.url}/nova/identity/v3/auth/tokens", json=body)
        if response.status_code != 201:
            raise BenchError(f"Keystone answered {response.status_code}: {response.text}")
        client.headers["X-Auth-Token"] = response.headers["X-Subject-Token"]
        catalog = response.json()["token"]["catalog"]
        return next(
            str(e["url"]).rstrip("/")
            for s in catalog
            if s["type"] == "compute"
            for e in s["endpoints"]
            if e["interface"] == "public"
        )
