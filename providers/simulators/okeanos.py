"""PLACEHOLDER: replaced by the real okeanos simulator."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.types import ASGIApp

from providers.simulators.common import Simulator


class OkeanosSimulator(Simulator):
    name = "okeanos"

    def app(self) -> ASGIApp:
        return Starlette()

    def seed(self, data: dict[str, Any]) -> None:
        self.data = data

    def snapshot(self) -> dict[str, Any]:
        return {}
