"""A brake on guessing secrets: sign-ins (`auth.login`, the web page's /login) back off per key
and per address.

Each attempt with a key pair counts in two sliding windows, one for the access key it names and
one for the client address it comes from. An attempt counts from the moment it starts (so a flood
of concurrent guesses cannot all pass the check while their hashes are computed) and is taken
back out when it succeeds; a failed one stays for `window_s`. Once a window holds its limit,
further attempts are refused at once, without hashing, with the seconds until its oldest attempt
leaves (the API answers 429 with `Retry-After`).

    LoginGuard.begin(key, address) -> stamp     raises Throttled when either window is full
    LoginGuard.succeeded(key, address, stamp)   the attempt no longer counts
    guard.sign_in(keys, key, secret, address)   both around KeyStore.verify_off_loop

Addresses are the TCP peer's: behind a reverse proxy every client shares the proxy's address, and
the per-address limit then applies to all of them together (docs/security.md).
"""
from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING

from server import errors
from server.auth.keys import Identity
from shipyard import clock

if TYPE_CHECKING:
    from server.auth.keys import KeyStore

_PRUNE_ABOVE = 10_000  # windows kept before empty ones are swept out


class Throttled(errors.APIError):
    """Too many failed sign-ins in the window; `retry_after_s` says when one more is counted."""

    def __init__(self, what: str, retry_after_s: int):
        super().__init__(429, 0, f"Too many failed sign-ins for this {what}; retry in {retry_after_s} s",
                         {"retry_after_s": retry_after_s})
        self.retry_after_s = retry_after_s


class LoginGuard:
    """Sliding windows of recent sign-in attempts per access key and per client address; a limit
    of 0 turns that window off. Used from the event loop thread only."""

    def __init__(self, per_key: int = 10, per_address: int = 30, window_s: float = 60.0):
        self.per_key = per_key
        self.per_address = per_address
        self.window_s = window_s
        self._windows: dict[tuple[str, str], deque[float]] = {}

    def begin(self, access_key: str, address: str) -> float:
        now = clock.monotonic()
        self._sweep(now)
        for what, name, limit in (("access key", access_key, self.per_key),
                                  ("address", address, self.per_address)):
            window = self._window(what, name, now)
            if limit and len(window) >= limit:
                raise Throttled(what, max(1, math.ceil(window[0] + self.window_s - now)))
        for what, name in (("access key", access_key), ("address", address)):
            self._windows.setdefault((what, name), deque()).append(now)
        return now

    def succeeded(self, access_key: str, address: str, stamp: float) -> None:
        for key in (("access key", access_key), ("address", address)):
            window = self._windows.get(key)
            if window is not None and stamp in window:
                window.remove(stamp)

    def _window(self, what: str, name: str, now: float) -> deque[float]:
        window = self._windows.get((what, name))
        if window is None:
            return deque()
        while window and window[0] <= now - self.window_s:
            window.popleft()
        return window

    def _sweep(self, now: float) -> None:
        if len(self._windows) <= _PRUNE_ABOVE:
            return
        for key in list(self._windows):
            if not self._window(*key, now):
                del self._windows[key]

    async def sign_in(self, keys: "KeyStore", access_key: str, secret_key: str, address: str) -> Identity:
        """Check a key pair under the guard: Throttled before any hashing when a window is full,
        the key store's 401 when the pair is wrong (the attempt keeps counting)."""
        stamp = self.begin(access_key, address)
        identity = await keys.verify_off_loop(access_key, secret_key)
        self.succeeded(access_key, address, stamp)
        return identity
