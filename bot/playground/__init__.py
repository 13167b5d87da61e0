"""The local playground (``stopbot dev``): the real bot behind a browser page that stands in
for a Slack channel, with the provider simulators and a panel to inject faults."""

from __future__ import annotations

__all__: list[str] = []
