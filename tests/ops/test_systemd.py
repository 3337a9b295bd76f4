"""The systemd units: `systemd-analyze verify` accepts them, and they say what docs/operations.md says.

verify refuses a unit whose ExecStart binary is missing, and the units name the install path
/opt/shipyard/bin/shipyard; the copies verified here point at this checkout's `shipyard` instead.
verify only warns (exit 0) on unknown keys and unparsable values, so its stderr must be empty too.
"""
from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
INSTALLED_BINARY = "/opt/shipyard/bin/shipyard"
SERVICES = ["shipyard-server.service", "shipyard-agent@.service", "shipyard-autoscaler.service",
            "shipyard-scheduler.service"]
# Each of these makes systemd install a device allow-list, which hides /dev/nvidia* from the agent.
DEVICE_LISTS = ("PrivateDevices", "DeviceAllow", "DevicePolicy", "ProtectClock", "ProtectKernelLogs")


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # keys are case-sensitive in systemd
    parser.read(UNITS / name)
    return parser


@pytest.fixture(scope="module")
def verified_copies(tmp_path_factory) -> Path:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (scripts/test.sh installs Debian's systemd)")
    binary = shutil.which("shipyard") or str(Path(sys.executable).parent / "shipyard")
    assert Path(binary).is_file(), "the shipyard console script is not installed (pip install -e .)"
    folder = tmp_path_factory.mktemp("units")
    for name in SERVICES:
        (folder / name).write_text((UNITS / name).read_text().replace(INSTALLED_BINARY, binary))
    return folder


def _verify(folder: Path, *names: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", "--man=no", *[f"./{n}" for n in names]], cwd=folder,
                          capture_output=True, text=True, timeout=60)


def test_every_unit_verifies_cleanly(verified_copies):
    result = _verify(verified_copies, *SERVICES, "shipyard-agent@gpu0.service")
    assert result.returncode == 0, result.stderr
    ours = [line for line in result.stderr.splitlines() if "shipyard" in line]
    assert ours == [], "\n".join(ours)


def test_verify_catches_a_broken_unit(verified_copies):
    # Given a copy of the server unit with a typo in a key
    broken = verified_copies / "shipyard-broken.service"
    broken.write_text((verified_copies / "shipyard-server.service").read_text().replace("KillMode=", "KillMod="))
    # When verified, Then the warning names the unit (so the check above has teeth)
    assert "Unknown key 'KillMod'" in _verify(verified_copies, broken.name).stderr


def test_units_share_the_install_layout():
    for name in SERVICES:
        service = _unit(name)["Service"]
        assert service["ExecStart"].startswith(INSTALLED_BINARY + " "), name
        assert service["User"] == "shipyard" and service["Group"] == "shipyard", name
        assert service["Restart"] == "on-failure", name
        assert service["NoNewPrivileges"] == "yes", name
        # /var/lib/shipyard itself is listed: it is HOME, and a parent systemd creates is root's
        state = service["StateDirectory"].split()
        assert state[0] == "shipyard" and state[1].startswith("shipyard/"), name
        assert "\nEnvironment=HOME=/var/lib/shipyard\n" in (UNITS / name).read_text(), name


def test_agent_stop_settings():
    service = _unit("shipyard-agent@.service")["Service"]
    # Safety net behind ExecStop: SIGTERM to the daemon alone (mixed), SIGKILL to all at the end.
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed"
    assert service["TimeoutStopSec"] == "15min"
    assert "Environment=SHIPYARD_DRAIN_S=840\n" in (UNITS / "shipyard-agent@.service").read_text()
    assert set(service["RestartPreventExitStatus"].split()) == {"2", "4"}  # config, credentials


RECORDER = """
import signal, sys, time
seen = []
def on_term(*_):
    seen.append(time.monotonic())
    print("drain" if len(seen) == 1 else "abort", flush=True)
    if len(seen) == 2:
        sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


def test_agent_exec_stop_drains_then_aborts(tmp_path):
    """The ExecStop script itself, run as systemd would (`$$` unescaped, MAINPID and
    SHIPYARD_DRAIN_S in its environment), against a process that records the signals."""
    # Given a "daemon" that drains on the first SIGTERM and exits on the second
    script = _unit("shipyard-agent@.service")["Service"]["ExecStop"]
    argv = shlex.split(script.replace("$$", "$"))
    assert argv[:2] == ["/bin/sh", "-c"]
    daemon = subprocess.Popen([sys.executable, "-c", RECORDER], stdout=subprocess.PIPE, text=True)
    threading.Thread(target=daemon.wait, daemon=True).start()  # reap at exit, as systemd does
    assert daemon.stdout.readline().strip() == "ready"
    # When the stop runs with a 2-second drain window
    started = time.monotonic()
    stop = subprocess.run(argv, env={"MAINPID": str(daemon.pid), "SHIPYARD_DRAIN_S": "2", "PATH": "/usr/bin:/bin"},
                          timeout=30)
    elapsed = time.monotonic() - started
    # Then: drain at once, abort after the window, and the stop ends when the daemon is gone
    assert daemon.stdout.read().split() == ["drain", "abort"]
    assert daemon.wait(5) == 0 and stop.returncode == 0
    assert 2.0 <= elapsed < 6.0, elapsed


def test_agent_exec_stop_returns_when_the_drain_finishes(tmp_path):
    script = _unit("shipyard-agent@.service")["Service"]["ExecStop"]
    daemon = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\n"
                               "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\nprint('ready', flush=True)\n"
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    threading.Thread(target=daemon.wait, daemon=True).start()
    assert daemon.stdout.readline().strip() == "ready"
    started = time.monotonic()
    subprocess.run(shlex.split(script.replace("$$", "$")), env={"MAINPID": str(daemon.pid), "PATH": "/usr/bin:/bin"},
                   timeout=30, check=True)
    assert time.monotonic() - started < 3.0  # default window 840 s: it returned because the daemon exited
    assert daemon.wait(5) == 0


def test_agent_reads_its_instance_and_keeps_gpus_and_docker_usable():
    service = _unit("shipyard-agent@.service")["Service"]
    assert service["EnvironmentFile"] == "/etc/shipyard/agent-%i.env"
    assert "$SHIPYARD_DAEMON_ARGS" in service["ExecStart"]
    assert not [key for key in DEVICE_LISTS if key in service]
    assert "PrivateTmp" not in service  # docker mode bind-mounts host paths the engine must see
    assert "RestrictAddressFamilies" not in service and "SystemCallFilter" not in service
    example = (UNITS / "agent.env.example").read_text()
    assert "SHIPYARD_QUEUES=" in example and "SHIPYARD_DAEMON_ARGS=" in example


def test_autoscaler_and_scheduler_commands():
    assert " autoscaler --config /etc/shipyard/autoscaler.conf" in _unit("shipyard-autoscaler.service")[
        "Service"]["ExecStart"]
    assert " scheduler run --config /etc/shipyard/scheduler.conf" in _unit("shipyard-scheduler.service")[
        "Service"]["ExecStart"]
