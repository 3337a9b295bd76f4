"""Copied into each overlay venv's site-packages as `_shipyard_overlay.py` (sandbox/overlay.py).

Its .pth calls `attach(entry_venv, entry_site)` at interpreter start: imports from anywhere in
the sealed cache entry go through a loader that never writes bytecode (an agent running as root
without agent.task_user would otherwise write `__pycache__` into the entry on a task's first
import, and the entry would count as changed); then the entry's site-packages is added as a
site directory, after the run's own, with its own .pth files processed.

It runs in the task's interpreter, whatever its version: the standard library only.
"""
# importlib's own machinery, loaded with the interpreter (importing importlib.machinery would
# cost a few ms at every start of every task process)
import _frozen_importlib_external as _external
import os
import site
import sys


class SealedSourceLoader(_external.SourceFileLoader):
    """Reads the entry's .pyc files; never writes one (set_data only ever writes bytecode)."""

    def set_data(self, path, data, *, _mode=0o666):  # noqa: ANN001, ANN201, ARG002
        return None


def attach(entry, sitedir):  # noqa: ANN001, ANN201
    loaders = [(SealedSourceLoader if loader is _external.SourceFileLoader else loader, suffixes)
               for loader, suffixes in _external._get_supported_file_loaders()]  # type: ignore[attr-defined]
    finder = _external.FileFinder.path_hook(*loaders)
    prefix = entry.rstrip(os.sep) + os.sep

    def hook(path):  # noqa: ANN001, ANN202
        if path.startswith(prefix):
            return finder(path)  # ImportError for a non-directory (a zip): the next hook takes it
        raise ImportError("not in the environment cache entry")

    sys.path_hooks.insert(0, hook)
    site.addsitedir(sitedir)
