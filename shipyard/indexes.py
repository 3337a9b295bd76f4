"""Package-index facts shared by the settings (shipyard/client) and the builder (sandbox/):
PyTorch's per-CUDA index map, the pytorch_resolve modes, credentials written into index URLs.

    variant_cuda("cu121") -> (12, 1)         url_credentials("https://u:p@h/simple") -> ("h", "u", "p")
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

MODES = ("pip", "direct", "none")
DEFAULT_TORCH_INDEXES: Mapping[str, str] = {
    "cu118": "https://download.pytorch.org/whl/cu118",
    "cu121": "https://download.pytorch.org/whl/cu121",
    "cu124": "https://download.pytorch.org/whl/cu124",
    "cu126": "https://download.pytorch.org/whl/cu126",
    "cu128": "https://download.pytorch.org/whl/cu128",
    "cpu": "https://download.pytorch.org/whl/cpu",
}
_VARIANT = re.compile(r"^cu(\d+)(\d)$")


def variant_cuda(variant: str) -> tuple[int, int] | None:
    """`cu121` -> (12, 1), `cu118` -> (11, 8); None for anything else (`cpu`, `rocm6.2`)."""
    match = _VARIANT.match(variant)
    return (int(match.group(1)), int(match.group(2))) if match else None


def strip_credentials(url: str) -> str:
    """`https://user:pass@host/simple` -> `https://host/simple`."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def url_credentials(url: str) -> tuple[str, str, str] | None:
    """(host[:port], user, password) written into a URL, or None."""
    parts = urlsplit(url)
    if parts.username is None:
        return None
    host = parts.netloc.rsplit("@", 1)[1]
    return host, parts.username, parts.password or ""
