"""The sample estate the simulators start with, and the bot's default configuration uses.

One section per simulated API, in that simulator's seed format. Ids are fixed so
that documentation, tests and the default configuration can name them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_SEED", "sample_config"]

QOVERY_ORG = "8d2c5b4e-3f1a-4c6d-9e8f-0a1b2c3d4e5f"
QOVERY_TOKEN = "sim-qovery-token"
NOVA_USER = "stopbot"
NOVA_PASSWORD = "sim-nova-password"
NOVA_PROJECT = "dev"
OKEANOS_TOKEN = "sim-okeanos-token"
FELDERA_API_KEY = "apikey:sim-feldera-key"

DEFAULT_SEED: dict[str, Any] = {
    "qovery": {
        "token": QOVERY_TOKEN,
        "organization_id": QOVERY_ORG,
        "step_seconds": 3.0,
        "clusters": [
            {
                "id": "0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c01",
                "name": "dev-eu",
                "status": "DEPLOYED",
                # A month of running: 365 to 730 USD, so 0.50 to 1.00 an hour.
                "cost": {"min_cost_in_cents": 36500, "max_cost_in_cents": 73000},
            },
            {
                "id": "0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c02",
                "name": "staging-us",
                "status": "DEPLOYED",
                "lock": {
                    "owner_name": "Alice Martin",
                    "reason": "load test until Friday",
                    "ttl_in_days": 3,
                },
            },
            {
                "id": "0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c03",
                "name": "qa-old",
                "status": "STOPPED",
            },
        ],
    },
    "nova": {
        "username": NOVA_USER,
        "password": NOVA_PASSWORD,
        "project_name": NOVA_PROJECT,
        "user_domain_name": "Default",
        "project_domain_name": "Default",
        "step_seconds": 3.0,
        "servers": [
            {
                "id": "6a1f0e2d-9b8c-4d7e-a6f5-1c2b3a4d5e01",
                "name": "web-1",
                "status": "ACTIVE",
            },
            {
                "id": "6a1f0e2d-9b8c-4d7e-a6f5-1c2b3a4d5e02",
                "name": "batch-2",
                "status": "ACTIVE",
                "locked": True,
                "locked_reason": "kernel upgrade in progress",
            },
            {
                "id": "6a1f0e2d-9b8c-4d7e-a6f5-1c2b3a4d5e03",
                "name": "db-3",
                "status": "SHUTOFF",
            },
        ],
    },
    "okeanos": {
        "token": OKEANOS_TOKEN,
        "step_seconds": 3.0,
        "lambda_instances": [
            {
                "id": "9c4b7a2e-1d3f-4e5a-b6c7-d8e9f0a1b201",
                "name": "lambda-cluster-1",
                "status": "STARTED",
            }
        ],
        "applications": [
            {
                "id": "2e7d5c3b-8a9f-4b1c-9d2e-3f4a5b6c7d01",
                "name": "spark",
                "type": "batch",
                "deployments": [
                    {"lambda_instance_id": "9c4b7a2e-1d3f-4e5a-b6c7-d8e9f0a1b201", "started": True}
                ],
            },
            {
                "id": "2e7d5c3b-8a9f-4b1c-9d2e-3f4a5b6c7d02",
                "name": "flink",
                "type": "streaming",
                "deployments": [
                    {"lambda_instance_id": "9c4b7a2e-1d3f-4e5a-b6c7-d8e9f0a1b201", "started": False}
                ],
            },
        ],
    },
    "feldera": {
        "api_key": FELDERA_API_KEY,
        "step_seconds": 3.0,
        "enterprise": False,
        "pipelines": [
            {"name": "etl", "deployment_status": "Running"},
            {"name": "analytics", "deployment_status": "Paused"},
            {"name": "archive", "deployment_status": "Stopped"},
        ],
    },
}


def sample_config(base_url: str) -> dict[str, Any]:
    """A ``stopbot.yaml`` document for the simulators served at ``base_url``."""
    seed = DEFAULT_SEED
    okeanos_instance = seed["okeanos"]["lambda_instances"][0]["id"]
    return {
        "providers": [
            {
                "name": "qovery",
                "type": "qovery",
                "base_url": f"{base_url}/qovery",
                "token": QOVERY_TOKEN,
                "organization_id": QOVERY_ORG,
            },
            {
                "name": "nova",
                "type": "openstack",
                "auth_url": f"{base_url}/nova/identity/v3",
                "username": NOVA_USER,
                "password": NOVA_PASSWORD,
                "project_name": NOVA_PROJECT,
                "user_domain_name": "Default",
                "project_domain_name": "Default",
            },
            {
                "name": "okeanos",
                "type": "okeanos",
                "base_url": f"{base_url}/okeanos",
                "token": OKEANOS_TOKEN,
            },
            {
                "name": "feldera",
                "type": "feldera",
                "base_url": f"{base_url}/feldera",
                "token": FELDERA_API_KEY,
            },
        ],
        "resources": [
            *(
                {"name": c["name"], "provider": "qovery", "id": c["id"], "tags": {"env": "dev"}}
                for c in seed["qovery"]["clusters"]
            ),
            *(
                {"name": s["name"], "provider": "nova", "id": s["id"], "tags": {"env": "dev"}}
                for s in seed["nova"]["servers"]
            ),
            *(
                {
                    "name": a["name"],
                    "provider": "okeanos",
                    "id": a["id"],
                    "lambda_instance_id": okeanos_instance,
                    "tags": {"env": "dev"},
                }
                for a in seed["okeanos"]["applications"]
            ),
            *(
                {"name": p["name"], "provider": "feldera", "id": p["name"], "tags": {"env": "dev"}}
                for p in seed["feldera"]["pipelines"]
            ),
        ],
    }
