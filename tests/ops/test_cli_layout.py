"""The CLI's boundaries (issue 18): only shipyard/cli imports click, nothing else imports the
CLI, its modules form no import cycle and none takes another's private names; the shared
state travels as a typed CliState on click's context."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from shipyard.cli import main
from shipyard.cli.state import CliState

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("shipyard", "agent", "sandbox", "server", "autoscaler", "scheduler")
CLI = ROOT / "shipyard" / "cli"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import in the file, those inside functions included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def _product_files() -> list[Path]:
    return [path for package in PRODUCT for path in sorted((ROOT / package).rglob("*.py"))]


def test_only_the_cli_imports_click():
    outside = [f"{path.relative_to(ROOT)}: {module}" for path in _product_files() if CLI not in path.parents
               for module, _names in _imports(path) if module.split(".")[0] == "click"]
    assert outside == []


def test_nothing_outside_the_cli_imports_it():
    allowed = {ROOT / "shipyard" / "__main__.py"}
    outside = [f"{path.relative_to(ROOT)}: {module}" for path in _product_files()
               if CLI not in path.parents and path not in allowed
               for module, names in _imports(path)
               if module == "shipyard.cli" or module.startswith("shipyard.cli.")
               or (module == "shipyard" and "cli" in names)]
    assert outside == []


def _cli_graph() -> dict[str, set[str]]:
    modules = {_module(path): path for path in sorted(CLI.glob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for module, names in _imports(path):
            targets = [module] + [f"{module}.{n}" for n in names]
            graph[name] |= {target for target in targets if target in modules and target != name}
    return graph


def test_cli_modules_import_no_cycle():
    graph = _cli_graph()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        assert name not in path, f"import cycle: {' -> '.join([*path, name])}"
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*path, name])
        done.add(name)

    for name in graph:
        visit(name, [])


def test_cli_modules_take_no_private_names_from_each_other():
    taken = [f"{path.name}: from {module} import {name}" for path in sorted(CLI.glob("*.py"))
             for module, names in _imports(path) if module.startswith("shipyard.cli")
             for name in names if name.startswith("_")]
    assert taken == []


def test_config_file_reaches_the_commands_through_the_state(tmp_path, capsys, monkeypatch):
    # Given a clearml.conf named on the command line, not in the environment
    conf = tmp_path / "clearml.conf"
    conf.write_text('api { api_server: "http://example.invalid:8008" }\n')
    monkeypatch.delenv("CLEARML_CONFIG_FILE", raising=False)
    monkeypatch.delenv("CLEARML_API_HOST", raising=False)
    # When `config` prints the effective settings
    assert main(["--config-file", str(conf), "config"]) == 0
    # Then they came from that file
    out = capsys.readouterr().out
    assert f"# config file: {conf}" in out
    assert "http://example.invalid:8008" in out


def test_state_loads_settings_once_and_api_needs_credentials(tmp_path, monkeypatch):
    conf = tmp_path / "clearml.conf"
    conf.write_text('api { api_server: "http://example.invalid:8008" }\n')
    for name in ("CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY", "CLEARML_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    state = CliState(config_file=conf)
    assert state.settings is state.settings
    assert state.settings_with(**{"agent.task_user": None}) is state.settings   # unset options: no reload
    from shipyard.errors import ConfigError

    with pytest.raises(ConfigError, match="no API credentials"):
        _ = state.api  # the property read is what raises
    state.close()
