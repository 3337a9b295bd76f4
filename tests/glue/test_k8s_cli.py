"""`shipyard k8s` refuses bad settings at start, naming the option, before it claims anything."""
from __future__ import annotations

import re

import pytest

pytest.importorskip("kubernetes")

from shipyard.cli import main  # noqa: E402

BASE = ["k8s", "--queue", "gpu=1", "--namespace", "ml", "--image", "img:1"]


@pytest.mark.parametrize(("extra", "words"), [
    (["--allow-option", "--privileged"], "--allow-option.*--privileged has no pod equivalent"),
    (["--template", "{template}"], "spec.nodeSelecter is not a field Kubernetes knows"),
    (["--kubeconfig", "{missing}"], "no Kubernetes credentials: not in a cluster, and kubeconfig .*missing"),
])
def test_bad_settings_stop_the_glue_naming_them(tmp_path, monkeypatch, capsys, extra, words):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    template = tmp_path / "pod.yaml"
    template.write_text("spec:\n  nodeSelecter: {gpu: a100}\n")
    args = [a.format(template=template, missing=tmp_path / "missing") for a in extra]
    assert main([*BASE, *args]) == 2
    err = capsys.readouterr().err
    assert re.search(words, err), err
