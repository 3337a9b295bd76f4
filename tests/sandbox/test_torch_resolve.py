"""Choosing the torch index for a driver's CUDA, extra indexes and their credentials (pure logic),
the settings that drive them, a refused index."""
from __future__ import annotations

import json

import pytest

from sandbox import install_errors
from sandbox.requirements import parse_requirements
from sandbox.torch_resolve import (
    DEFAULT_TORCH_INDEXES,
    choose_torch_index,
    resolve_torch,
    strip_credentials,
    with_credentials,
    with_extra_indexes,
)
from shipyard.client.config import load_settings
from shipyard.errors import ConfigError, RequirementsError
from shipyard.redact import MASK

MAP = {"cu118": "http://ix/cu118", "cu121": "http://ix/cu121", "cu124": "http://ix/cu124", "cpu": "http://ix/cpu"}


@pytest.mark.parametrize(("cuda", "variant", "exact"), [
    ("12.4", "cu124", True), ("12.1", "cu121", True), ("12.2", "cu121", False), ("12.8", "cu124", False),
    ("11.8", "cu118", True), ("11.7", "cpu", False), (None, "cpu", False),
])
def test_the_newest_index_the_driver_runs_never_a_newer_cuda(cuda, variant, exact):
    choice = choose_torch_index(cuda, MAP)
    assert choice is not None and choice.variant == variant and choice.url == MAP[variant]
    assert ("and the map has an index built for it" in choice.why) is exact
    assert choice.why.startswith(f"torch from index {variant} (")


def test_no_fitting_index_and_no_cpu_entry_leaves_torch_alone():
    reqs = parse_requirements("torch==2.5.0")
    same, choice, line = resolve_torch(reqs, mode="pip", cuda="11.0", indexes={"cu121": "http://ix/cu121"})
    assert same == reqs and choice is None and "no index fits CUDA 11.0" in line


def test_resolve_adds_the_index_and_drops_a_recorded_local_label():
    reqs = parse_requirements("# Python 3.11.7\ntorch==2.5.0+cu118\ntorchvision==0.20.0+cu118\nnumpy==1.26.4\n")
    out, choice, _ = resolve_torch(reqs, mode="pip", cuda="12.4", indexes=MAP)
    assert choice is not None and choice.cache_key() == "torch-index=cu124 http://ix/cu124"
    assert out.install_lines() == ["--extra-index-url http://ix/cu124", "torch==2.5.0", "torchvision==0.20.0",
                                   "numpy==1.26.4"]
    assert out.python_hint == "3.11.7"
    assert out.canonical() != resolve_torch(reqs, mode="pip", cuda="12.1", indexes=MAP)[0].canonical()


def test_mode_none_and_sets_without_torch_are_untouched():
    torch = parse_requirements("torch==2.5.0")
    assert resolve_torch(torch, mode="none", cuda="12.4", indexes=MAP) == (torch, None, "")
    other = parse_requirements("numpy")
    assert resolve_torch(other, mode="pip", cuda="12.4", indexes=MAP) == (other, None, "")
    assert resolve_torch(torch, mode="direct", cuda="12.4", indexes=MAP)[1] is not None


def test_extra_indexes_keep_credentials_out_and_the_builder_puts_them_back():
    reqs = with_extra_indexes(parse_requirements("pkg"), ["https://u:pw@ix.example/simple/", "https://ix.example/simple"])
    assert reqs.install_lines() == ["--extra-index-url https://ix.example/simple", "pkg"]
    assert "pw" not in reqs.canonical()
    credited = with_credentials(reqs.install_lines(), {"ix.example": ("u", "p@ss word")})
    assert credited == ["--extra-index-url https://u:p%40ss%20word@ix.example/simple", "pkg"]
    assert with_credentials(["--extra-index-url http://h:81/s"], {"h:81": ("a", "b")}) == ["--extra-index-url http://a:b@h:81/s"]
    assert strip_credentials("http://a:b@h:81/s") == "http://h:81/s"


def test_settings_read_clearml_keys_mask_secrets_and_name_bad_values(tmp_path):
    conf = tmp_path / "clearml.conf"
    conf.write_text("""
agent.package_manager { pytorch_resolve: none, extra_index_url: ["https://bob:hunter2@pypi.corp/simple"],
                        trusted_host: "pypi.corp" }
agent.venvs_cache { max_entries: 5, free_space_threshold_gb: 2.5, shared_path: /nfs/venvs }
shipyard.index_credentials: [{host: "other.corp", user: "u", password: "pw2"}]
""")
    settings = load_settings(env={"HOME": str(tmp_path)}, config_file=conf)
    packages, limits = settings.agent.packages, settings.agent.venvs_cache
    assert packages.pytorch_resolve == "none" and packages.trusted_hosts == ("pypi.corp",)
    assert packages.credentials_by_host() == {"other.corp": ("u", "pw2"), "pypi.corp": ("bob", "hunter2")}
    assert packages.torch_indexes == DEFAULT_TORCH_INDEXES
    assert (limits.max_entries, limits.free_space_threshold_gb, str(limits.shared_path)) == (5, 2.5, "/nfs/venvs")
    assert {"hunter2", "pw2"} <= set(settings.secrets())
    shown = json.dumps([str(value) for _key, value, _source in settings.describe()])
    assert "hunter2" not in shown and "pw2" not in shown and MASK in shown
    assert dict((k, s) for k, _v, s in settings.describe())["agent.venvs_cache.max_entries"].startswith("file:")
    for env, named in ({"SHIPYARD_PYTORCH_RESOLVE": "conda"}, "agent.packages.pytorch_resolve"), \
                      ({"SHIPYARD_TORCH_INDEXES": '{"cuda12": "http://x"}'}, "agent.packages.torch_indexes"), \
                      ({"SHIPYARD_EXTRA_INDEX_URLS": '["ftp://x"]'}, "agent.packages.extra_index_urls"):
        with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
            load_settings(env={"HOME": str(tmp_path / "none"), **env})


def test_a_refused_index_is_a_requirements_error_quoting_the_installer():
    uv_output = ("error: No solution found when resolving dependencies\n  cause: Because pkg was not found in the "
                 "package registry ...\n\nhint: An index URL (http://127.0.0.1:1/private) could not be queried due to"
                 " a lack of valid authentication credentials (401 Unauthorized)\n")
    assert install_errors.classify(uv_output) == "auth"
    error = install_errors.auth_error(uv_output)
    assert isinstance(error, RequirementsError)
    assert "refused access" in str(error) and str(error).endswith("(401 Unauthorized)")
    assert "hint:" not in str(error)
