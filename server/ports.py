"""Before the listeners start: can each port be listened on, and if not, who holds it.

`unavailable(host, ports)` tries to bind each port the way the listeners will (SO_REUSEADDR, the
address family of `host`) and closes it at once, so a busy port is found in milliseconds
instead of after the listeners gave up. `holder(port)` names what listens there, best effort
on Linux: the socket's inode from /proc/net/tcp{,6}, then the process whose /proc/<pid>/fd
links to it (only this user's processes are visible to an unprivileged user; then the owning
uid from /proc/net/tcp is all that is known).
"""
from __future__ import annotations

import errno
import os
import pwd
import socket
from dataclasses import dataclass
from pathlib import Path

_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp
_PROC = Path("/proc")


@dataclass(frozen=True)
class PortProblem:
    port: int
    option: str      # the command-line option that sets this port
    detail: str      # "is in use by pid 123 (python3 -m http.server)", "needs root", ...


def unavailable(host: str, ports: dict[str, int]) -> list[PortProblem]:
    """Problems with `ports` ({option: port}) on `host`: taken twice, in use, not bindable; or
    one problem with `host` itself (not an address of this machine)."""
    address = _address_problem(host)
    if address is not None:
        return [PortProblem(0, "--host", address)]
    problems: list[PortProblem] = []
    seen: dict[int, str] = {}
    for option, port in ports.items():
        if port in seen:
            problems.append(PortProblem(port, option, f"is also given to {seen[port]}"))
            continue
        seen[port] = option
        detail = _bind_problem(host, port)
        if detail is not None:
            problems.append(PortProblem(port, option, detail))
    return problems


def _address_problem(host: str) -> str | None:
    """Why nothing can listen on `host` at all (any port), or None."""
    with _socket(host) as sock:
        try:
            sock.bind((host, 0))
        except OSError as exc:
            return f"{host} cannot be listened on: {exc.strerror or exc}"
    return None


def _socket(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.socket(family, socket.SOCK_STREAM)


def _bind_problem(host: str, port: int) -> str | None:
    with _socket(host) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                held_by = holder(port)
                return f"is in use by {held_by}" if held_by else "is in use"
            if exc.errno == errno.EACCES:
                return "needs root (ports below 1024 are privileged)"
            return f"cannot be listened on: {exc.strerror or exc}"
    return None


def holder(port: int) -> str | None:
    """"pid 123 (cmdline)" or "a process of user NAME" for the listener on `port`; None if unknown."""
    sockets = _listening_sockets(port)
    if not sockets:
        return None
    pid = _pid_of(set(sockets))
    if pid is not None:
        return f"pid {pid} ({_command(pid)})"
    uid = next(iter(sockets.values()))
    return f"a process of user {_user(uid)}"


def _listening_sockets(port: int) -> dict[str, int]:
    """{socket inode: owner uid} of the TCP listeners on `port` (IPv4 and IPv6)."""
    found: dict[str, int] = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found[fields[9]] = int(fields[7])
    return found


def _pid_of(inodes: set[str]) -> int | None:
    links = {f"socket:[{inode}]" for inode in inodes}
    for entry in _PROC.iterdir():
        if entry.name.isdigit() and _holds(entry, links):
            return int(entry.name)
    return None


def _holds(proc_dir: Path, links: set[str]) -> bool:
    try:
        return any(os.readlink(fd) in links for fd in (proc_dir / "fd").iterdir())
    except OSError:  # another user's process, or it exited meanwhile
        return False


def _command(pid: int) -> str:
    try:
        argv = (_PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [" ".join(part.decode(errors="replace").split()) for part in argv if part]  # one line
    text = " ".join([os.path.basename(words[0]), *words[1:]]) if words else "?"
    return text if len(text) <= 120 else text[:117] + "..."


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def describe(problems: list[PortProblem]) -> str:
    """One line for a person: each port, what is wrong, and the options that choose others."""
    if problems[0].option == "--host":
        return f"cannot start the server: {problems[0].detail}; give --host an address of this machine"
    each = "; ".join(f"port {p.port} ({p.option}) {p.detail}" for p in problems)
    options = ", ".join(dict.fromkeys(f"{p.option} PORT" for p in problems))
    return f"cannot start the server: {each}. Stop what holds it or choose another port with {options}"
