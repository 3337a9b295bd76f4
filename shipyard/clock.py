"""The one patchable clock. Decision code asks it for the time; tests replace `now`."""
from __future__ import annotations

import time
from datetime import datetime, timezone


def now() -> float:
    """Seconds since the epoch (wall clock)."""
    return time.time()


def monotonic() -> float:
    return time.monotonic()


def iso(ts: float | None = None) -> str:
    """ISO-8601 UTC with milliseconds, the form ClearML clients parse."""
    moment = datetime.fromtimestamp(now() if ts is None else ts, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds")


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
