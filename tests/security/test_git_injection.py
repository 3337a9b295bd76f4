"""Attack 11 of issue 17: git option injection through a task's script fields.

A repository `--upload-pack=<command>` reached `git clone` as an option. Now a repository,
branch, tag or commit that starts with `-` fails the task before git runs, with a reason a
person can act on (also the last line of its console), and every URL and path reaches git
after `--`. The end-to-end test runs a real server and a real daemon; the unit tests call the
repository cache directly to prove the `--` holds even for a value nobody checked.
"""
from __future__ import annotations

import secrets

import pytest

from sandbox.gitcmd import GitRunner
from sandbox.repo_cache import RepoCache, Revision, _fetch
from shipyard.errors import WorkspaceError
from tests.agent_helpers import agent_env, create_task, make_repo, start_daemon, task_log, wait_status
from tests.helpers import start_server

QUEUE = "git-injection"


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    root = tmp_path_factory.mktemp("git-injection")
    server = start_server(root / "server")
    daemon = start_daemon(agent_env(server, root), [QUEUE], root / "daemon.log")
    repo, commit = make_repo(root / "repo", {"train.py": "print('normal repo ran')\n"})
    yield {"api": server.api(), "root": root, "repo": repo, "commit": commit}
    daemon.stop()
    server.stop()


def _marker(tmp_path) -> tuple[str, object]:
    path = tmp_path / f"pwned-{secrets.token_hex(6)}"
    return f"--upload-pack=touch {path}", path


@pytest.mark.parametrize("field", ["repository", "branch", "version_num", "tag"])
def test_option_shaped_script_values_fail_the_task_before_git_runs(rig, tmp_path, field):
    api = rig["api"]
    payload, marker = _marker(tmp_path)
    script = {"repository": str(rig["repo"]), "entry_point": "train.py",
              field: "-x" if field == "version_num" else payload}
    task = create_task(api, f"inject {field}", script, queue=QUEUE)
    doc = wait_status(api, task, timeout=120)
    assert doc["status"] == "failed"
    reason = doc["status_reason"]
    assert f"script.{field}" in reason and "starts with '-'" in reason and "option" in reason, reason
    last = [line for line in task_log(api, task) if line.strip()][-1]
    assert f"script.{field}" in last and "starts with '-'" in last, last
    assert not marker.exists()


def test_a_normal_repository_still_runs(rig):
    api = rig["api"]
    task = create_task(api, "normal", {"repository": str(rig["repo"]), "version_num": rig["commit"],
                                       "branch": "main", "entry_point": "train.py"}, queue=QUEUE)
    doc = wait_status(api, task, timeout=120)
    assert doc["status"] == "completed", doc.get("status_reason")
    assert "normal repo ran" in task_log(api, task)


def test_repo_cache_refuses_option_shaped_values(tmp_path):
    payload, marker = _marker(tmp_path)
    cache = RepoCache(tmp_path / "cache")
    with GitRunner() as git:
        for url, revision in ((payload, Revision()), (str(tmp_path), Revision(branch=payload)),
                              (str(tmp_path), Revision(tag="-x")), (str(tmp_path), Revision(commit="-x"))):
            with pytest.raises(WorkspaceError) as err:
                cache.checkout(url, revision, tmp_path / "dest", git, lambda _line: None)
            assert "starts with '-'" in err.value.reason
    assert not marker.exists() and not (tmp_path / "cache").exists()


def test_double_dash_keeps_an_unchecked_url_an_argument(tmp_path):
    """Even past the checks, clone and fetch take an option-shaped URL for a repository (git
    names it in quotes as the repository it cannot use), never for an option."""
    payload, marker = _marker(tmp_path)
    repo, _ = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    mirror = tmp_path / "mirror.git"
    with GitRunner() as git:
        assert git.run(["clone", "--bare", "--quiet", "--", str(repo), str(mirror)]).returncode == 0
        with pytest.raises(WorkspaceError) as fetched:
            _fetch(payload, mirror, git, default_head=False)
        with pytest.raises(WorkspaceError) as cloned:
            RepoCache(tmp_path / "cache")._ensure_mirror(payload, tmp_path / "cache" / "m", git, lambda _l: None)
    for err in (fetched, cloned):
        assert f"'{payload}'" in err.value.reason, err.value.reason
    assert not marker.exists()
