"""`CliState`: what the commands of one `shipyard` run share, held as click's `ctx.obj`.

The root group makes it from its own options (`--config-file`) and closes it when the command
ends. A command takes it with `@pass_state` (or `state_of(ctx)` where it needs the context too)
and asks it for what it needs, each made on first use:

    state.settings          the client settings: clearml.conf, CLEARML_* variables, defaults
    state.settings_with()   the same with a command's own overrides (dotted keys), loaded afresh
    state.api               an ApiClient logged in with those settings' credentials
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from shipyard.client.api import ApiClient
from shipyard.client.config import Settings, load_settings
from shipyard.errors import ConfigError

R = TypeVar("R")


@dataclass
class CliState:
    config_file: Path | None = None
    """--config-file: the clearml.conf to read (None: the lookup of `find_config_file`)."""
    _settings: Settings | None = field(default=None, init=False, repr=False)
    _api: ApiClient | None = field(default=None, init=False, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(config_file=self.config_file)
        return self._settings

    def settings_with(self, **overrides: Any) -> Settings:
        """The settings with command-line overrides; options left unset (None, ()) are skipped."""
        given = {key: value for key, value in overrides.items() if value not in (None, ())}
        return load_settings(given, config_file=self.config_file) if given else self.settings

    @property
    def api(self) -> ApiClient:
        """The API client of `settings`; ConfigError when they hold no credentials."""
        if self._api is None:
            self._api = connect(self.settings)
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None


def connect(settings: Settings) -> ApiClient:
    if not settings.api.access_key or not settings.api.secret_key:
        raise ConfigError("no API credentials: set api.credentials in clearml.conf or "
                          "CLEARML_API_ACCESS_KEY / CLEARML_API_SECRET_KEY")
    return ApiClient.from_settings(settings)


def state_of(ctx: click.Context) -> CliState:
    """The run's CliState; a fresh one (closed with `ctx`) when the command runs without the root group."""
    state = ctx.find_object(CliState)
    if state is None:
        state = ctx.ensure_object(CliState)
        ctx.call_on_close(state.close)
    return state


def pass_state(command: Callable[..., R]) -> Callable[..., R]:
    """Decorator: call the command with the run's CliState as its first argument."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> R:
        return command(state_of(click.get_current_context()), *args, **kwargs)

    return run
