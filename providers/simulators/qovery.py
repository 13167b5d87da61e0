"""PLACEHOLDER: replaced by the real qovery simulator."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.types import ASGIApp

from providers.simulators.common import Simulator


class QoverySimulator(Simulator):
    name = "qovery"

    def app(self) -> ASGIApp:
        return Starlette()

    def seed(self, data: dict[str, Any]) -> None:
        self.data = data

    def snapshot(self) -> dict[str, Any]:
        return {}
