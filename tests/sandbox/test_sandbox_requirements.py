"""Parsing ClearML's recorded requirements: table tests over real-world line shapes."""
from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.requirements import (
    Kind,
    find_repo_requirements,
    from_script,
    parse_line,
    parse_requirements,
    split_option,
)
from shipyard.errors import RequirementsError

SHA = "0123456789abcdef0123456789abcdef01234567"

SDK_RECORDING = """# Python 3.11.7 (main, Dec  4 2023, 18:10:11) [GCC 12.2.0]

clearml == 2.1.12
numpy==1.26.4
Pillow >= 10.0   # imaging
my_lib @ file:///home/me/dist/my_lib-0.1-py3-none-any.whl

# Detailed import analysis
# **************************
# IMPORT PACKAGE clearml
# train.py: 1
"""


@pytest.mark.parametrize(
    ("line", "kind", "canonical", "name"),
    [
        ("numpy==1.26.4", Kind.NAMED, "numpy==1.26.4", "numpy"),
        ("clearml == 2.1.12", Kind.NAMED, "clearml==2.1.12", "clearml"),
        ("Foo_Bar.baz  >=1 ,<2", Kind.NAMED, "foo-bar-baz<2,>=1", "foo-bar-baz"),
        ("requests[socks,Security]==2.31", Kind.NAMED, "requests[security,socks]==2.31", "requests"),
        ('tomli; python_version < "3.11"', Kind.NAMED, 'tomli; python_version < "3.11"', "tomli"),
        ("torch==2.2.0+cu121", Kind.NAMED, "torch==2.2.0+cu121", "torch"),
        ("six", Kind.NAMED, "six", "six"),
        ("My_Pkg @ file:///tmp/my_pkg-1.0-py3-none-any.whl", Kind.DIRECT,
         "my-pkg @ file:///tmp/my_pkg-1.0-py3-none-any.whl", "my-pkg"),
        ("pkg@https://h/pkg-1.0.tar.gz", Kind.DIRECT, "pkg @ https://h/pkg-1.0.tar.gz", "pkg"),
        (f"git+https://github.com/org/repo.git@{SHA}#egg=Repo_Pkg", Kind.VCS,
         f"git+https://github.com/org/repo.git@{SHA}#egg=Repo_Pkg", "repo-pkg"),
        ("https://h/wheels/x-1.0-py3-none-any.whl", Kind.URL, "https://h/wheels/x-1.0-py3-none-any.whl", None),
        ("./vendor/lib", Kind.URL, "./vendor/lib", None),
        ("-e ./src", Kind.EDITABLE, "-e ./src", None),
        ("--editable=git+https://h/r.git#egg=thing", Kind.EDITABLE, "-e git+https://h/r.git#egg=thing", "thing"),
        ("-i https://pypi.example/simple", Kind.OPTION, "--index-url https://pypi.example/simple", None),
        ("--extra-index-url https://x/simple?a=b", Kind.OPTION, "--extra-index-url https://x/simple?a=b", None),
        ("--extra-index-url=https://x/simple", Kind.OPTION, "--extra-index-url https://x/simple", None),
        ("--pre", Kind.OPTION, "--pre", None),
        ("-r other.txt", Kind.INCLUDE, "--requirement other.txt", None),
        ("-rother.txt", Kind.INCLUDE, "--requirement other.txt", None),
        ("-c constraints.txt", Kind.INCLUDE, "--constraint constraints.txt", None),
    ],
)
def test_line_shapes(line, kind, canonical, name):
    req = parse_line(line)
    assert (req.kind, req.canonical, req.name) == (kind, canonical, name)


def test_sdk_recording():
    reqs = parse_requirements(SDK_RECORDING)
    assert reqs.python_hint == "3.11.7"
    assert reqs.install_lines() == [
        "clearml == 2.1.12",  # kept as recorded
        "numpy==1.26.4",
        "Pillow >= 10.0",
        "my_lib @ file:///home/me/dist/my_lib-0.1-py3-none-any.whl",
    ]
    assert reqs.canonical().splitlines() == [
        "clearml==2.1.12",
        "my-lib @ file:///home/me/dist/my_lib-0.1-py3-none-any.whl",
        "numpy==1.26.4",
        "pillow>=10.0",
    ]


def test_equivalent_recordings_share_a_canonical_form():
    a = parse_requirements("# Python 3.11.7\nNumPy == 1.26.4\n\nsix==1.16.0\n")
    b = parse_requirements(["six==1.16.0  # pinned", "numpy==1.26.4", "# Python 3.10.1", "numpy==1.26.4"])
    assert a.canonical() == b.canonical() == "numpy==1.26.4\nsix==1.16.0"
    assert a.python_hint == "3.11.7" and b.python_hint == "3.10.1"


def test_options_go_first_and_continuations_join():
    reqs = parse_requirements("six==1.16.0\n--extra-index-url \\\n  https://x/simple\nidna==3.7\n")
    assert reqs.install_lines() == ["--extra-index-url https://x/simple", "six==1.16.0", "idna==3.7"]


@pytest.mark.parametrize("empty", [None, "", [], "\n# only a comment\n"])
def test_empty(empty):
    reqs = parse_requirements(empty)
    assert not reqs and reqs.canonical() == ""


def test_invalid_line_names_it():
    with pytest.raises(RequirementsError, match="requirement line 2 'numpy===' is not valid"):
        parse_requirements("six\nnumpy===\n")
    with pytest.raises(RequirementsError, match="option --extra-index-url needs a value"):
        parse_requirements("--extra-index-url")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("six==1.16.0", None),
        (f"pkg @ git+https://h/r.git@{SHA}", None),
        ("pkg @ https://h/pkg-1.0-py3-none-any.whl", None),
        ("-r base.txt", "refers to another file"),
        ("-e .", "editable install"),
        ("pkg @ file:///opt/pkg.whl", "local path"),
        ("./vendor/lib", "local path"),
        ("git+https://h/r.git@main#egg=r", "not pinned to a full commit"),
    ],
)
def test_cacheability(line, reason):
    found = parse_requirements(line).uncacheable_reason()
    assert (found is None) if reason is None else (reason in found)


def test_missing_local_files_fall_back_to_names():
    reqs = parse_requirements("a @ file:///here/a.whl\nb @ file:///gone/b.whl\nc==1\n")
    kept, replaced = reqs.without_missing_local_files(lambda path: path.startswith("/here"))
    assert replaced == ["b @ file:///gone/b.whl"]
    assert kept.install_lines() == ["a @ file:///here/a.whl", "b", "c==1"]


def test_from_script():
    assert from_script({"requirements": {"pip": "six==1.16.0"}}).install_lines() == ["six==1.16.0"]
    assert not from_script({"requirements": None}) and not from_script({})


def test_split_option():
    assert split_option("--find-links=/wheels") == ("--find-links", "/wheels")
    assert split_option("-f /wheels") == ("--find-links", "/wheels")


# -- requirements found in the repository ---------------------------------------------------------


def test_repo_requirements_prefer_the_working_dir(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "requirements.txt").write_text("root-pkg\n")
    (tmp_path / "sub" / "requirements.txt").write_text("sub-pkg\n")
    found = find_repo_requirements(tmp_path / "sub", tmp_path)
    assert found.source == tmp_path / "sub" / "requirements.txt"
    assert found.requirements.install_lines() == ["sub-pkg"]
    assert find_repo_requirements(tmp_path, tmp_path).requirements.install_lines() == ["root-pkg"]


def test_repo_requirements_inline_includes_and_anchor_paths(tmp_path: Path):
    (tmp_path / "reqs").mkdir()
    (tmp_path / "reqs" / "base.txt").write_text("six==1.16.0\n-r base.txt\n")  # a cycle is harmless
    (tmp_path / "requirements.txt").write_text("-r reqs/base.txt\n-e ./lib\nidna==3.7\n")
    found = find_repo_requirements(tmp_path, tmp_path)
    assert found.requirements.install_lines() == ["six==1.16.0", f"-e {tmp_path / 'lib'}", "idna==3.7"]


def test_repo_requirements_missing_include(tmp_path: Path):
    (tmp_path / "requirements.txt").write_text("-r nope.txt\n")
    with pytest.raises(RequirementsError, match="nope.txt .included with -r. does not exist"):
        find_repo_requirements(tmp_path, tmp_path)


def test_pyproject_dependencies(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["six==1.16.0", "idna>=3"]\n')
    found = find_repo_requirements(tmp_path, tmp_path)
    assert found.source.name == "pyproject.toml"
    assert found.requirements.canonical() == "idna>=3\nsix==1.16.0"


def test_no_repo_requirements(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text('[tool.black]\nline-length = 100\n')
    assert find_repo_requirements(tmp_path, tmp_path) is None
