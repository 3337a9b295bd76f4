"""Environment rebuild: a task's code and its Python environment, as ClearML recorded them.

    git_workspace   prepare_workspace(script, dest, RepoCache(...)) -> Workspace
    repo_cache      RepoCache: one bare mirror per repository URL, flock-guarded
    gitcmd          running git with askpass credentials, no prompts, redacted errors
    patching        applying script.diff (git apply, then --3way)
    requirements    parsing script.requirements.pip into a RequirementSet
    lockfiles       uv.lock / poetry.lock / Pipfile.lock / hashed files as pinned sets; which source wins
    envsource       finding and reading the chosen source (uv lock --check, uv export) -> EnvSource
    pyenv           select_interpreter, EnvBuilder (uv, falling back to virtualenv + pip)
    install_errors  reading uv/pip failures into RequirementsError / InfrastructureError
    env_cache       EnvCache.materialize: content-addressed venvs, each run an overlay venv over one
    overlay         the run's small venv whose .pth adds the sealed entry's site-packages (overlay_hook)
    exposure        which entries a task could have changed since their last check (the tamper invariant)
    manifest        sealing an entry and verifying it against its stamps
    bytecode        the detached, niced compiler that byte-compiles a published cache entry
    staged_bytecode compiling into a staging tree, then into the sealed entry
    linkfarm        the hard-link tree copy with path rewriting (an overlay's bin/, share/...)
    proc            subprocesses whose timeout kills the whole group (file locks: shipyard/locks.py)
"""
