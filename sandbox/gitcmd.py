"""Running `git` safely: credentials through GIT_ASKPASS, no prompts, timeouts, redacted errors.

Credentials are configured per host (`{"github.com": ("user", "token")}`). They reach git only
through the environment of the git process and a small askpass helper that reads them from
there: never in a URL, a command line, a log line or an error message.

Values that come from a task (repository URL, branch, tag, commit) are checked with
`check_git_value` before any git command sees them: one starting with `-` would be read as an
option (`--upload-pack=<command>` runs a command). Callers also put `--` before every URL and
path they pass, so even an unchecked value stays an argument.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from sandbox.proc import run_captured
from shipyard.errors import InfrastructureError, WorkspaceError

Credentials = Mapping[str, tuple[str, str]]

DEFAULT_NETWORK_TIMEOUT = 600.0
"""Seconds a clone, fetch or submodule update may take before we call the network broken."""

LOCAL_TIMEOUT = 300.0
"""Seconds any other git command may take (checkout of a huge tree on a slow disk)."""

CREDENTIALS_ENV = "SHIPYARD_GIT_CREDENTIALS"

NETWORK_FAILURE_MARKERS = (
    "could not resolve host",
    "could not resolve hostname",
    "temporary failure in name resolution",
    "name or service not known",
    "failed to connect to",
    "couldn't connect to server",
    "connection refused",
    "connection timed out",
    "operation timed out",
    "network is unreachable",
    "no route to host",
    "connection reset",
    "ssl_connect",
    "gnutls_handshake",
    "the requested url returned error: 502",
    "the requested url returned error: 503",
    "the requested url returned error: 504",
)

_ASKPASS_SCRIPT = """#!{python}
# Written by Shipyard: answers git's username/password prompts from {env}.
import json, os, re, sys
prompt = sys.argv[1] if len(sys.argv) > 1 else ""
creds = json.loads(os.environ.get("{env}", "{{}}"))
m = re.search(r"'[a-z+]+://(?:[^@/']*@)?([^/':]+)(?::(\\d+))?", prompt)
if not m:
    sys.exit(1)
host = m.group(1).lower()
pair = creds.get(host + ":" + m.group(2)) if m.group(2) else None
pair = pair or creds.get(host)
if not pair:
    sys.exit(1)
print(pair[0] if prompt.lower().startswith("username") else pair[1])
"""

_URL_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s']+@")


def normalize_host_key(key: str) -> str:
    """`https://GitHub.com/` and `github.com` both become `github.com`; a port is kept."""
    if "://" in key:
        parts = urlsplit(key)
        host = (parts.hostname or "").lower()
        return f"{host}:{parts.port}" if parts.port else host
    return key.strip().strip("/").lower()


def strip_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """Remove `user:password@` from a URL; return the clean URL and the pair (if any)."""
    if "://" not in url:
        return url, None
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    netloc = parts.netloc.rsplit("@", 1)[1]
    clean = parts._replace(netloc=netloc).geturl()
    return clean, (parts.username, parts.password or "")


def check_git_value(value: str | None, field: str, expected: str) -> None:
    """Refuse a task value that git would read as an option (`field` names it for a person,
    `expected` says what belongs there)."""
    if value and value.lstrip().startswith("-"):
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise WorkspaceError(
            f"script.{field} '{shown}' starts with '-', which git would read as an option; refused. "
            f"Set script.{field} to {expected}",
            kind="invalid_script",
        )


def is_network_failure(text: str) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in NETWORK_FAILURE_MARKERS)


def git_reason(stderr: str) -> str:
    """The lines of git's stderr that explain a failure, without the `fatal:` prefixes."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    picked = [
        re.sub(r"^(fatal|error):\s*", "", line)
        for line in lines
        if line.startswith(("fatal:", "error:"))
    ]
    if not picked:
        picked = lines[-1:] or ["git gave no reason"]
    return "; ".join(dict.fromkeys(picked))


class GitRunner:
    """Runs git commands with credentials and a safe, non-interactive environment.

    Use as a context manager: the askpass helper lives in a private temp dir for the duration.
    """

    def __init__(
        self,
        credentials: Credentials | None = None,
        *,
        network_timeout: float = DEFAULT_NETWORK_TIMEOUT,
        allow_file_protocol: bool = False,
    ) -> None:
        self._credentials = {normalize_host_key(h): tuple(c) for h, c in (credentials or {}).items()}
        self.network_timeout = network_timeout
        self.allow_file_protocol = allow_file_protocol
        self._helper_dir: Path | None = None

    def add_credentials(self, host: str, pair: tuple[str, str]) -> None:
        self._credentials.setdefault(normalize_host_key(host), pair)

    def __enter__(self) -> GitRunner:
        self._helper_dir = Path(tempfile.mkdtemp(prefix="shipyard-git-"))
        script = self._helper_dir / "askpass"
        script.write_text(_ASKPASS_SCRIPT.format(python=sys.executable, env=CREDENTIALS_ENV))
        script.chmod(0o700)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._helper_dir is not None:
            shutil.rmtree(self._helper_dir, ignore_errors=True)
            self._helper_dir = None

    def run(
        self,
        args: Sequence[str],
        *,
        cwd: Path | None = None,
        network: bool = False,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `git <args>`; never raises for a non-zero exit (callers word their own errors).

        Raises InfrastructureError when git is missing or the command runs past its timeout.
        """
        timeout = self.network_timeout if network else LOCAL_TIMEOUT
        command = ["git", *self._config_args(), *args]
        try:
            proc = run_captured(command, cwd=cwd, stdin=stdin, env=self._environment(), timeout=timeout)
        except FileNotFoundError as exc:
            raise InfrastructureError("git is not installed on this agent", kind="git_missing") from exc
        except subprocess.TimeoutExpired as exc:
            raise InfrastructureError(
                f"git {args[0]} timed out after {timeout:.0f}s", kind="git_timeout"
            ) from exc
        return subprocess.CompletedProcess(
            proc.args, proc.returncode, self.redact(proc.stdout), self.redact(proc.stderr)
        )

    def redact(self, text: str) -> str:
        """Remove every configured secret and any URL userinfo from `text`."""
        text = _URL_USERINFO.sub(r"\1***@", text)
        for user, password in self._credentials.values():
            for secret in (password, user):
                if len(secret) >= 3:
                    text = text.replace(secret, "***")
        return text

    def _config_args(self) -> list[str]:
        args = ["-c", "advice.detachedHead=false"]
        if self._credentials:
            args += ["-c", "credential.helper="]  # never store our credentials anywhere
        if self.allow_file_protocol:
            args += ["-c", "protocol.file.allow=always"]  # local submodules, see CVE-2022-39253
        return args

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", LANGUAGE="C")
        env.setdefault("GIT_SSH_COMMAND", "ssh -oBatchMode=yes")
        if self._helper_dir is not None:
            env["GIT_ASKPASS"] = str(self._helper_dir / "askpass")
            env[CREDENTIALS_ENV] = json.dumps(self._credentials)
        return env
