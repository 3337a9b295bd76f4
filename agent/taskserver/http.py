"""The TaskServer over HTTP: `shipyard.client.api.ApiClient` already is one (it speaks the
ClearML REST envelope, retries transient failures and refreshes its token)."""
from __future__ import annotations

from agent.taskserver.port import TaskServer
from shipyard.client.api import ApiClient
from shipyard.client.config import Settings


def connect(settings: Settings) -> TaskServer:
    """The configured server, as the daemon and a run talk to it."""
    return ApiClient.from_settings(settings)


def _conforms(api: ApiClient) -> TaskServer:
    return api  # mypy checks here that ApiClient satisfies the protocol


__all__ = ["ApiClient", "connect"]
