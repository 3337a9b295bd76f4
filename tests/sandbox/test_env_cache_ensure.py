"""EnvCache.ensure, the build-only entry point of prepare while queued: it builds the entry a
later materialize of the same requirements finds (no installer then), builds it once, and
refuses what cannot be cached. Real venvs."""
from __future__ import annotations

import sys

import pytest

from sandbox.env_cache import EnvCache
from sandbox.pyenv import probe

PYTHON = probe(sys.executable)


def test_ensure_builds_the_entry_that_materialize_then_links(light_builder, tmp_path):
    cache = EnvCache(tmp_path / "cache", builder=light_builder, compile_bytecode="off")
    key, built = cache.ensure("six==1.16.0", PYTHON, extra="x", log=print)
    assert built and light_builder.calls == 1 and cache.complete(key)
    assert list((tmp_path / "cache" / "entries" / key).glob("venv/bin/python*"))
    assert cache.ensure("six == 1.16.0\n", PYTHON, extra="x", log=print) == (key, False)   # once
    light_builder.forbid()
    result = cache.materialize("six==1.16.0", PYTHON, tmp_path / "t", extra="x", log=print)
    assert result.cache_hit and result.key == key


def test_ensure_refuses_what_cannot_be_cached(light_builder, tmp_path):
    (tmp_path / "base.txt").write_text("six==1.16.0\n")
    cache = EnvCache(tmp_path / "cache", builder=light_builder)
    with pytest.raises(ValueError, match="not cacheable"):
        cache.ensure(f"-r {tmp_path / 'base.txt'}", PYTHON, log=print)
    assert light_builder.calls == 0 and cache.entries() == []
