"""Tasks as an unprivileged user of their own: `shipyard daemon --task-user NAME` (agent.task_user).

An agent running as root (a root install, a container run as root, a root unit) would otherwise run
every task as root, and a task could write whatever the agent can: the environment cache whose files
every later task imports (issue 17, attack 4), the git cache, other runs. With a task user:

    user = task_user.startup_check(settings)    # at start: TaskUser or None; ConfigError if unusable
    env_cache.materialize(..., owner=user.owner) # the venv's directories and private copies are its
    user.hand_over(target)                       # the run's directory, checkout and home too
    Child(argv, cwd, env, user=user)             # setgroups([]), setgid, setuid, then exec

The caches stay the agent's (files read-only, directories 0755), so a task's write into them
fails with EACCES. Without a task user, an agent running as root says so in its log at start;
the cache's manifests (sandbox/manifest.py) still catch a tampered entry before it is reused.
Docker mode does not use it: containers run as agent.docker.user (docs/docker.md).
"""
from __future__ import annotations

import logging
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from sandbox.linkfarm import give_tree
from shipyard.client.config import Settings
from shipyard.errors import ConfigError

log = logging.getLogger("shipyard.agent.task_user")

ROOT_WARNING = (
    "the agent runs as root and agent.task_user is not set: tasks run as root and can write the "
    "environment cache and the git cache that later tasks use (a changed environment is detected and "
    "rebuilt, but not every change can be seen). Give tasks a user of their own: "
    "`useradd --system shipyard-task` and `shipyard daemon --task-user shipyard-task`."
)


@dataclass(frozen=True)
class TaskUser:
    name: str
    uid: int
    gid: int

    @property
    def owner(self) -> tuple[int, int]:
        return self.uid, self.gid

    def env(self, home: Path) -> dict[str, str]:
        """Variables that describe this user to the task (its HOME is in the run's directory)."""
        return {"HOME": str(home), "USER": self.name, "LOGNAME": self.name}

    def hand_over(self, path: Path) -> None:
        """Give `path` (a run's directory or part of it) to this user; hard-linked files stay shared."""
        give_tree(path, self.owner)


def resolve(name: str | None) -> TaskUser | None:
    """The user named by agent.task_user (a name or a numeric uid); None when unset or the agent's own.

    Raises ConfigError when the user does not exist, is root, or the agent cannot switch to it.
    """
    if not name:
        return None
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(f"agent.task_user: there is no user {name!r} on this machine "
                          "(create one: useradd --system NAME)") from None
    if entry.pw_uid == 0:
        raise ConfigError("agent.task_user must not be root: it is the user tasks run as instead of root")
    if entry.pw_uid == os.geteuid():
        return None  # already that user: nothing to switch
    if os.geteuid() != 0:
        raise ConfigError(f"agent.task_user {name!r}: running tasks as another user needs the agent to run "
                          f"as root (it runs as uid {os.geteuid()})")
    return TaskUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def startup_check(settings: Settings) -> TaskUser | None:
    """Resolve agent.task_user for a daemon about to start; log what it means for this agent.

    Raises ConfigError when the user is unusable or cannot reach the work dir.
    """
    agent = settings.agent
    if agent.docker.enabled:
        if agent.task_user:
            log.warning("agent.task_user is not used in docker mode: containers run as agent.docker.user")
        return None
    user = resolve(agent.task_user)
    if user is None:
        if os.geteuid() == 0:
            log.warning(ROOT_WARNING)
        return None
    blocked = unreachable(agent.work_dir, user)
    if blocked:
        raise ConfigError(f"agent.task_user {user.name!r} cannot reach the work dir {agent.work_dir}: {blocked}; "
                          "choose a work dir it can reach (shipyard.work_dir, e.g. /var/lib/shipyard/work)")
    log.info("tasks run as user %s (uid %d); the caches stay the agent's and read-only to them", user.name, user.uid)
    return user


def unreachable(path: Path, user: TaskUser) -> str | None:
    """Why `user` cannot traverse to `path` (an ancestor it may not search), or None."""
    for ancestor in reversed([path.absolute(), *path.absolute().parents]):
        try:
            st = ancestor.stat()
        except FileNotFoundError:
            return None  # created by the agent (0755) on first use
        if st.st_uid == user.uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid == user.gid:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            return f"{ancestor} is mode {stat.S_IMODE(st.st_mode):04o}, owned by uid {st.st_uid}"
    return None
