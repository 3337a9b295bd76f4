"""Build a task's Python environment inside its container. Standard library only: it runs under
the image's own python, mounted read-only, never imported by the agent.

    python3 /shipyard/lib/container_build.py /shipyard/task/run/build.json

The host (agent/docker_exec.py) decided everything and wrote it to build.json: where the venv
goes, whether it is a shared cache entry, the requirements file, the interpreters to try. Here:

1. a cache entry is locked (flock on a file in the mounted cache: one lock for every container
   and the host) and reused if another container completed it meanwhile;
2. the interpreter is the first candidate on PATH (script.binary, python<recorded version>,
   python3);
3. the venv is created with the mounted uv, seeing the image's site-packages; where uv cannot
   run (e.g. a musl image) with `python -m venv` and pip instead;
4. the requirements are installed byte-compiled (a cache entry is later mounted read-only);
5. its freeze list goes to meta.json, then COMPLETE is written: an entry without it is never used.

On failure it writes {"stage", "output"} to the result file for the host to classify, and exits 1.
"""
# ruff: noqa: UP021, UP031 - written for whatever python the image has (3.6 and up), not the agent's
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time

TAIL_CHARS = 20000


class BuildFailed(Exception):
    def __init__(self, stage, output):
        Exception.__init__(self, stage)
        self.stage = stage
        self.output = output


def say(text):
    print("shipyard: " + text, flush=True)


def run(command, env, cwd=None, merge=True):
    """(exit code, output); with merge=False only stdout, stderr goes to the task's log."""
    proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merge else None, env=env,
                          cwd=cwd, universal_newlines=True)
    return proc.returncode, proc.stdout or ""


def pick_python(candidates):
    for name in candidates:
        found = name if os.sep in name and os.access(name, os.X_OK) else shutil.which(name)
        if found:
            if name != candidates[0]:
                say("%s requested but not in the image; using %s" % (candidates[0], found))
            return found
    raise BuildFailed("interpreter", "none of %s is on the image's PATH" % ", ".join(candidates))


def create_venv(spec, python, env):
    """uv venv, else python -m venv; returns the installer command prefix for the new venv."""
    venv = spec["venv"]
    venv_python = os.path.join(venv, "bin", "python")
    uv = spec.get("uv")
    if uv:
        try:
            code, out = run([uv, "venv", "--quiet", "--seed", "--system-site-packages", "--python", python, venv],
                            env)
        except OSError as exc:
            code, out = 127, str(exc)
        if code == 0:
            return [uv, "pip", "install", "--compile-bytecode", "--python", venv_python]
        say("uv cannot build here (%s); using python -m venv and pip" % out.strip().splitlines()[-1:])
        shutil.rmtree(venv, ignore_errors=True)
    code, out = run([python, "-m", "venv", "--system-site-packages", venv], env)
    if code != 0:
        raise BuildFailed("venv", out)
    return [venv_python, "-m", "pip", "install", "--disable-pip-version-check"]


def freeze(spec, installer, env):
    venv_python = os.path.join(spec["venv"], "bin", "python")
    if installer[0] != venv_python:
        code, out = run([installer[0], "pip", "freeze", "--quiet", "--python", venv_python], env, merge=False)
    else:
        code, out = run([venv_python, "-m", "pip", "freeze", "--all", "--local"], env, merge=False)
    if code != 0:
        raise BuildFailed("freeze", out)
    return [line.strip() for line in out.splitlines() if line.strip()]


def build(spec, env):
    python = pick_python(spec["candidates"])
    version = subprocess.run([python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                             stdout=subprocess.PIPE, universal_newlines=True).stdout.strip()
    say("building environment %s with %s (Python %s, %d requirement lines)"
        % (spec["label"], python, version, spec["lines"]))
    installer = create_venv(spec, python, env)
    if spec["lines"]:
        code, out = run(installer + ["-r", spec["requirements"]], env, cwd=spec.get("cwd"))
        if code != 0:
            raise BuildFailed("install", out)
    return {"frozen": freeze(spec, installer, env), "python": python, "version": version,
            "created": time.time()}


def write_atomically(path, text):
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def empty(directory):
    if not os.path.isdir(directory):
        os.makedirs(directory)
        return
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


def materialize(spec, env):
    """Build the venv (under the entry's lock for a cache entry); return (its meta, built here?)."""
    entry = spec.get("entry")
    if not entry:
        return build(spec, env), True
    os.makedirs(os.path.dirname(spec["lock"]), exist_ok=True)
    with open(spec["lock"], "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if os.path.isfile(os.path.join(entry, "COMPLETE")):
            say("environment %s was built meanwhile by another task; reusing it" % spec["label"])
            with open(os.path.join(entry, "meta.json")) as handle:
                return json.load(handle), False
        empty(entry)  # a build that was killed midway; the directory is a mount point
        meta = build(spec, env)
        write_atomically(os.path.join(entry, "meta.json"), json.dumps(meta, indent=1))
        write_atomically(os.path.join(entry, "COMPLETE"), "%f\n" % time.time())
        return meta, True


def main(path):
    with open(path) as handle:
        spec = json.load(handle)
    env = dict(os.environ)
    env.update(spec.get("env") or {})
    started = time.time()
    try:
        meta, built = materialize(spec, env)
    except BuildFailed as exc:
        write_atomically(spec["result"], json.dumps({"stage": exc.stage, "output": exc.output[-TAIL_CHARS:]}))
        tail = exc.output.strip().splitlines()[-15:]
        print("\n".join(tail), file=sys.stderr, flush=True)
        say("the environment could not be built (%s)" % exc.stage)
        return 1
    write_atomically(spec["frozen"], "\n".join(meta["frozen"]) + "\n")
    say("environment ready in %.2fs (%s)" % (time.time() - started, "built" if built else "built by another task"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
