"""prepare_workspace against real repositories created in tmp dirs."""
from __future__ import annotations

import shutil
import socket
import subprocess
import threading

import pytest

from sandbox.git_workspace import RepoCache, ScriptSpec, prepare_workspace
from sandbox.gitcmd import GitRunner
from sandbox.repo_cache import normalize_url
from shipyard.errors import InfrastructureError, WorkspaceError

MAIN = "print('v1')\n"


def script(repo_url: str | None, **fields: str) -> dict:
    return {"repository": repo_url or "", "entry_point": "main.py", "working_dir": ".", **fields}


@pytest.fixture
def repo(make_repo):
    source = make_repo("project")
    source.commit({"main.py": MAIN, "lib/util.py": "X = 1\n"}, "first")
    return source


def test_checks_out_the_recorded_commit(repo, repo_cache, tmp_path):
    # Given a repository with two commits
    first = repo.head()
    repo.commit({"main.py": "print('v2')\n"}, "second")
    # When the task recorded the first one
    ws = prepare_workspace(script(repo.url, version_num=first), tmp_path / "ws", repo_cache, log=lambda _: None)
    # Then the working copy is at that commit, with absolute paths
    assert ws.commit == first
    assert ws.entry_point == tmp_path / "ws" / "main.py"
    assert ws.entry_point.read_text() == MAIN
    assert ws.working_dir == ws.root == tmp_path / "ws"
    assert ws.repository == repo.url
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ws.root, capture_output=True, text=True)
    assert head.stdout.strip() == first


def test_applies_the_uncommitted_diff(repo, repo_cache, tmp_path):
    diff = repo.diff_of({"main.py": "print('edited')\n", "new_file.py": "NEW = True\n"})
    ws = prepare_workspace(script(repo.url, version_num=repo.head(), diff=diff), tmp_path / "ws", repo_cache, log=print)
    assert ws.entry_point.read_text() == "print('edited')\n"
    assert (ws.root / "new_file.py").read_text() == "NEW = True\n"


def test_diff_falls_back_to_three_way_merge(make_repo, repo_cache, tmp_path):
    # Given a diff recorded against an older commit whose context has changed since
    lines = [f"line {i}\n" for i in range(10)]
    source = make_repo("merge")
    source.commit({"main.py": "".join(lines)})
    diff = source.diff_of({"main.py": "".join(lines[:2] + ["CHANGED\n"] + lines[3:])})
    newer = source.commit({"main.py": "".join(lines[:4] + ["ALSO CHANGED\n"] + lines[5:])})
    # When it is applied to the newer commit, plain `git apply` fails but --3way merges it
    ws = prepare_workspace(script(source.url, version_num=newer, diff=diff), tmp_path / "ws", repo_cache, log=print)
    text = ws.entry_point.read_text()
    assert "CHANGED\n" in text and "ALSO CHANGED\n" in text


def test_branch_head_follows_new_commits(repo, repo_cache, tmp_path):
    repo.run("checkout", "--quiet", "-b", "feature")
    repo.commit({"main.py": "print('feature 1')\n"})
    ws1 = prepare_workspace(script(repo.url, branch="feature"), tmp_path / "ws1", repo_cache, log=print)
    assert ws1.entry_point.read_text() == "print('feature 1')\n"
    # A later commit on the branch is fetched into the cached mirror
    head = repo.commit({"main.py": "print('feature 2')\n"})
    ws2 = prepare_workspace(script(repo.url, branch="origin/feature"), tmp_path / "ws2", repo_cache, log=print)
    assert ws2.commit == head
    assert ws2.entry_point.read_text() == "print('feature 2')\n"
    branch = subprocess.run(["git", "branch", "--show-current"], cwd=ws2.root, capture_output=True, text=True)
    assert branch.stdout.strip() == "feature"


def test_tag_and_default_head(repo, repo_cache, tmp_path):
    tagged = repo.head()
    repo.run("tag", "v1.0")
    head = repo.commit({"main.py": "print('head')\n"})
    at_tag = prepare_workspace(script(repo.url, tag="v1.0"), tmp_path / "tag", repo_cache, log=print)
    at_head = prepare_workspace(script(repo.url), tmp_path / "head", repo_cache, log=print)
    assert (at_tag.commit, at_head.commit) == (tagged, head)
    assert at_head.entry_point.read_text() == "print('head')\n"


def test_commit_takes_precedence_over_tag_and_branch(repo, repo_cache, tmp_path):
    first = repo.head()
    repo.run("tag", "v1")
    repo.commit({"main.py": "print('v2')\n"})
    ws = prepare_workspace(script(repo.url, version_num=first, tag="nope", branch="main"), tmp_path / "ws", repo_cache)
    assert ws.commit == first


def test_plain_local_path_works_as_url(repo, repo_cache, tmp_path):
    ws = prepare_workspace(script(str(repo.path)), tmp_path / "ws", repo_cache, log=print)
    assert ws.entry_point.read_text() == MAIN


def test_known_commit_needs_no_fetch(repo, repo_cache, tmp_path):
    # Given a commit already in the cached mirror
    sha = repo.head()
    prepare_workspace(script(repo.url, version_num=sha), tmp_path / "ws1", repo_cache, log=print)
    # When the remote disappears, the same commit is still served from the cache
    shutil.move(repo.path, tmp_path / "moved-away")
    ws = prepare_workspace(script(repo.url, version_num=sha), tmp_path / "ws2", repo_cache, log=print)
    assert ws.commit == sha


def test_working_dir_and_module_entry_points(make_repo, repo_cache, tmp_path):
    source = make_repo("nested")
    source.commit({"src/app/train.py": "print('train')\n", "src/pkg/__init__.py": ""})
    ws = prepare_workspace(
        script(source.url, working_dir="src", entry_point="app/train.py"), tmp_path / "a", repo_cache, log=print
    )
    assert ws.working_dir == tmp_path / "a" / "src"
    assert ws.entry_point == tmp_path / "a" / "src" / "app" / "train.py"
    mod = prepare_workspace(script(source.url, working_dir="src", entry_point="-m pkg"), tmp_path / "b", repo_cache)
    assert mod.module == "pkg" and mod.entry_point == mod.working_dir


def test_submodules_are_initialized(make_repo, repo_cache, tmp_path):
    sub = make_repo("sub")
    sub.commit({"helper.py": "HELP = 1\n"})
    parent = make_repo("parent")
    parent.commit({"main.py": MAIN})
    parent.run("submodule", "add", "--quiet", sub.url, "libs/sub")
    parent.run("commit", "--quiet", "-m", "add submodule")
    ws = prepare_workspace(script(parent.url), tmp_path / "ws", repo_cache, log=print)
    assert (ws.root / "libs" / "sub" / "helper.py").read_text() == "HELP = 1\n"


def test_literal_script_without_repository(tmp_path, repo_cache):
    text = "print('hello from a literal script')\n"
    ws = prepare_workspace({"repository": "", "entry_point": "job.py", "diff": text}, tmp_path / "ws", repo_cache)
    assert ws.entry_point == tmp_path / "ws" / "job.py"
    assert ws.entry_point.read_text() == text
    assert (ws.commit, ws.repository) == (None, None)
    unnamed = prepare_workspace({"diff": text}, tmp_path / "ws2", repo_cache)
    assert unnamed.entry_point.name == "script.py"


def test_concurrent_workspaces_share_one_mirror(repo, repo_cache, tmp_path):
    results, errors = [], []

    def prepare(name: str) -> None:
        try:
            results.append(prepare_workspace(script(repo.url), tmp_path / name, repo_cache, log=lambda _: None))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=prepare, args=(f"ws{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert {r.commit for r in results} == {repo.head()}
    assert [p.name for p in repo_cache.root.iterdir() if p.is_dir()] == [repo_cache.mirror_dir(repo.url).name]


# -- errors ------------------------------------------------------------------------------------


def test_unreachable_repository(tmp_path, repo_cache):
    missing = tmp_path / "not-a-repo"
    missing.mkdir()   # there, but git finds no repository in it
    with pytest.raises(WorkspaceError) as info:
        prepare_workspace(script(str(missing)), tmp_path / "ws", repo_cache)
    message = str(info.value)
    assert message.startswith(f"could not fetch repository {missing}: ")
    assert "check the URL and the agent's git credentials" in message
    assert info.value.kind == "repository_unreachable"


def test_repository_path_of_another_machine_says_what_to_do(tmp_path, repo_cache):
    elsewhere = tmp_path / "on-the-laptop" / "repo"   # recorded where the task was created; not here
    for url in (str(elsewhere), f"file://{elsewhere}"):
        with pytest.raises(WorkspaceError) as info:
            prepare_workspace(script(url), tmp_path / "ws", repo_cache)
        assert str(info.value).startswith(f"the task's repository {url} is a path on the machine that created "
                                          "the task, and this worker cannot see it; push the repository")
        assert info.value.kind == "repository_unreachable"


def test_unknown_commit(repo, repo_cache, tmp_path):
    sha = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(WorkspaceError, match=f"^commit {sha} not found in {repo.url}; was it pushed\\?$"):
        prepare_workspace(script(repo.url, version_num=sha), tmp_path / "ws", repo_cache)
    assert list((tmp_path / "ws").iterdir()) == []  # left empty, ready for a retry


def test_unknown_tag_and_branch(repo, repo_cache, tmp_path):
    with pytest.raises(WorkspaceError, match="tag 'v9' not found in"):
        prepare_workspace(script(repo.url, tag="v9"), tmp_path / "a", repo_cache)
    with pytest.raises(WorkspaceError, match="branch 'gone' not found in"):
        prepare_workspace(script(repo.url, branch="gone"), tmp_path / "b", repo_cache)


def test_diff_that_does_not_apply_names_the_files(repo, repo_cache, tmp_path):
    diff = repo.diff_of({"lib/util.py": "X = 2\n"})
    head = repo.commit({"lib/util.py": "completely different\n"})
    with pytest.raises(WorkspaceError) as info:
        prepare_workspace(script(repo.url, version_num=head, diff=diff), tmp_path / "ws", repo_cache)
    assert "do not apply to lib/util.py" in str(info.value)
    assert info.value.kind == "diff_failed"


def test_corrupt_diff(repo, repo_cache, tmp_path):
    bad = "diff --git a/main.py b/main.py\n--- a/main.py\n+++ b/main.py\n@@ -1,1 +1,1 @@\n garbage\n"
    with pytest.raises(WorkspaceError, match=r"script\.diff\) could not be applied"):
        prepare_workspace(script(repo.url, diff=bad), tmp_path / "ws", repo_cache)


def test_missing_entry_point_names_path_and_contents(repo, repo_cache, tmp_path):
    with pytest.raises(WorkspaceError) as info:
        prepare_workspace(script(repo.url, entry_point="mian.py"), tmp_path / "ws", repo_cache)
    message = str(info.value)
    assert f"{tmp_path / 'ws' / 'mian.py'} does not exist" in message
    assert "'.' contains: lib/, main.py" in message
    assert "did you mean 'main.py'?" in message


def test_missing_working_dir_and_escaping_paths(repo, repo_cache, tmp_path):
    with pytest.raises(WorkspaceError, match="working directory 'nope' does not exist.*contains: lib/, main.py"):
        prepare_workspace(script(repo.url, working_dir="nope"), tmp_path / "a", repo_cache)
    with pytest.raises(WorkspaceError, match="points outside the repository"):
        prepare_workspace(script(repo.url, entry_point="../../etc/passwd"), tmp_path / "b", repo_cache)


def test_task_without_any_code(tmp_path, repo_cache):
    with pytest.raises(WorkspaceError, match="no repository and no script text"):
        prepare_workspace({"entry_point": "x.py"}, tmp_path / "ws", repo_cache)


def test_destination_must_be_empty(repo, repo_cache, tmp_path):
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "leftover").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        prepare_workspace(script(repo.url), tmp_path / "ws", repo_cache)


# -- credentials and network failures -----------------------------------------------------------


def test_credentials_in_url_never_leak(tmp_path, repo_cache):
    url = "https://robot:s3cr3t-T0ken@127.0.0.1:1/org/repo.git"
    logged: list[str] = []
    with pytest.raises(InfrastructureError) as info:
        prepare_workspace(script(url), tmp_path / "ws", repo_cache, log=logged.append)
    text = str(info.value) + "\n".join(logged)
    assert "could not fetch repository https://127.0.0.1:1/org/repo.git" in text
    assert "s3cr3t-T0ken" not in text and "robot" not in text
    assert not any("s3cr3t" in p.name for p in repo_cache.root.rglob("*"))


def test_configured_credentials_never_leak(tmp_path, repo_cache):
    credentials = {"127.0.0.1:1": ("deploy-user", "hunter2-token")}
    with pytest.raises((InfrastructureError, WorkspaceError)) as info:
        prepare_workspace(
            script("https://127.0.0.1:1/org/repo.git"), tmp_path / "ws", repo_cache, credentials=credentials
        )
    assert isinstance(info.value, InfrastructureError)  # connection refused: worth a retry
    assert "hunter2-token" not in str(info.value) and "deploy-user" not in str(info.value)


def test_network_operations_time_out(tmp_path, repo_cache):
    # Given a server that accepts connections and never answers
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"https://127.0.0.1:{server.getsockname()[1]}/org/repo.git"
        # Then git gives up after the network timeout, as an infrastructure failure
        with pytest.raises(InfrastructureError, match="timed out after 1s"):
            prepare_workspace(script(url), tmp_path / "ws", repo_cache, network_timeout=1)


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("Username for 'https://git.example.com': ", "alice"),
        ("Password for 'https://alice@git.example.com': ", "pa55word"),
        ("Password for 'https://git.example.com:8443': ", "port-token"),
    ],
)
def test_askpass_helper_answers_per_host(prompt, expected):
    credentials = {"https://git.example.com": ("alice", "pa55word"), "git.example.com:8443": ("bob", "port-token")}
    with GitRunner(credentials) as runner:
        env = runner._environment()
        proc = subprocess.run([env["GIT_ASKPASS"], prompt], env=env, capture_output=True, text=True)
    assert proc.stdout.strip() == expected
    assert env["GIT_TERMINAL_PROMPT"] == "0"


def test_askpass_helper_refuses_unknown_hosts():
    with GitRunner({"git.example.com": ("alice", "pa55word")}) as runner:
        env = runner._environment()
        proc = subprocess.run([env["GIT_ASKPASS"], "Username for 'https://other.org': "], env=env)
    assert proc.returncode == 1


def test_redaction():
    runner = GitRunner({"h": ("someone", "tok123")})
    assert runner.redact("fatal: https://x:y@h/r failed for someone with tok123") == (
        "fatal: https://***@h/r failed for *** with ***"
    )


# -- pure helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://GitHub.com/Org/Repo.git", "https://github.com/Org/Repo"),
        ("https://github.com/org/repo/", "https://github.com/org/repo.git"),
        ("git@github.com:org/repo.git", "ssh://git@github.com/org/repo"),
        ("/tmp/x/../repo", "file:///tmp/repo"),
    ],
)
def test_equivalent_urls_share_a_mirror(a, b):
    assert normalize_url(a) == normalize_url(b)


def test_mirror_dir_is_a_hash(tmp_path):
    cache = RepoCache(tmp_path)
    name = cache.mirror_dir("https://github.com/org/repo.git").name
    assert len(name) == 64 and set(name) <= set("0123456789abcdef")


def test_script_spec_reads_clearml_fields():
    spec = ScriptSpec.from_dict(
        {"repository": " https://h/r.git ", "branch": "origin/dev", "version_num": "", "tag": None, "working_dir": ""}
    )
    assert (spec.repository, spec.revision.branch, spec.revision.commit, spec.working_dir) == (
        "https://h/r.git", "dev", None, ".",
    )
