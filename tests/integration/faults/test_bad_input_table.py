"""Every ``llmops`` command with bad input or a failing dependency, run the way a user runs it.

Each row runs ``python -m pipelines ...`` in a subprocess and checks what the
user sees: exit code 2, no traceback, the last line of stderr is one
``llmops COMMAND: error: ...`` line that names the problem (and the fix), and
nothing was half-written where the command writes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]  # after `llmops`; {tmp}, {boot}, {dead} are filled in
    expect: tuple[str, ...]  # substrings of the error line (problem, fix)
    absent: tuple[str, ...] = ()  # paths (relative to tmp) that must not exist afterwards
    env: dict = field(default_factory=dict)


ISVC = """apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata: {meta}
spec: {spec}
"""
PRED = "{{predictor: {{canaryTrafficPercent: {pct}, model: {{modelFormat: {{name: llmops-llm}}, storageUri: {uri}}}}}}}"

CASES = [
    Case("import-missing", ("import", "{tmp}/nope", "--out", "{tmp}/o"), ("does not exist",), ("o",)),
    Case("import-corrupt-safetensors", ("import", "{tmp}/corrupt", "--out", "{tmp}/o"), ("corrupt", "re-download"), ("o",)),
    Case("import-truncated-safetensors", ("import", "{tmp}/trunc", "--out", "{tmp}/o"), ("truncated", "re-download"), ("o",)),
    Case("import-bad-config", ("import", "{tmp}/badcfg", "--out", "{tmp}/o"), ("config.json is not valid JSON", "save_pretrained"), ("o",)),
    Case("import-pickle-only", ("import", "{tmp}/pickle", "--out", "{tmp}/o"), ("pickle", "--allow-pickle"), ("o",)),
    Case("import-dead-mlflow", ("import", "models:/llm/1", "--out", "{tmp}/o", "--tracking-uri", "{dead}"),
         ("unreachable", "start the server"), ("o",)),
    Case("finetune-corrupt-safetensors", ("finetune", "{tmp}/corrupt", "{boot}/data/train.jsonl", "--out", "{tmp}/o"), ("corrupt",), ("o",)),
    Case("finetune-pickle-only", ("finetune", "{tmp}/pickle", "{boot}/data/train.jsonl", "--out", "{tmp}/o"), ("pickle-format", "llmops import"), ("o",)),
    Case("finetune-invalid-utf8", ("finetune", "{boot}/model", "{tmp}/bad.jsonl", "--out", "{tmp}/o"), ("not UTF-8", "re-encode"), ("o",)),
    Case("finetune-missing-data", ("finetune", "{boot}/model", "{tmp}/none.jsonl", "--out", "{tmp}/o"), ("file not found",), ("o",)),
    Case("finetune-out-of-range", ("finetune", "{boot}/model", "{boot}/data/train.jsonl", "--out", "{tmp}/o", "--max-steps", "-1"), ("max_steps",), ("o",)),
    Case("serve-predictor-string", ("serve", "-f", "{tmp}/oops.yaml", "--state-dir", "{tmp}/s"), ("spec.predictor must be a mapping",), ("s",)),
    Case("serve-spec-list", ("serve", "-f", "{tmp}/list.yaml", "--state-dir", "{tmp}/s"), ("spec must be a mapping",), ("s",)),
    Case("serve-bad-digest", ("serve", "-f", "{tmp}/digest.yaml", "--state-dir", "{tmp}/s"), ("malformed digest", "64 lowercase hex"), ("s/state.json",)),
    Case("serve-canary-150", ("serve", "-f", "{tmp}/pct.yaml", "--state-dir", "{tmp}/s"), ("canaryTrafficPercent: 150", "0 to 100"), ("s/state.json",)),
    Case("serve-missing-file", ("serve", "-f", "{tmp}/none.yaml", "--state-dir", "{tmp}/s"), ("cannot read",), ("s",)),
    Case("serve-not-yaml", ("serve", "-f", "{tmp}/bad.jsonl", "--state-dir", "{tmp}/s"), ("YAML",), ("s",)),
    Case("rollout-corrupt-state", ("rollout", "--name", "llm", "--storage-uri", "{boot}/model", "--model-version", "2",
                                   "--state-dir", "{tmp}/rs", "--no-quality", "--timeout", "20"),
         ("llmops.io/rollout-state", "is not a rollout state", "remove it")),
    Case("rollout-steps-out-of-range", ("rollout", "--name", "llm", "--storage-uri", "{boot}/model", "--model-version", "2",
                                        "--steps", "10,200", "--state-dir", "{tmp}/s"), ("1..100",), ("s",)),
    Case("rollout-bad-policy", ("rollout", "--name", "llm", "--storage-uri", "{boot}/model", "--model-version", "2",
                                "--policy", "{tmp}/bad.jsonl", "--state-dir", "{tmp}/s"), ("--policy",), ("s",)),
    Case("run-bad-base-model", ("run", "--base-model", "{tmp}/pickle", "--state-dir", "{tmp}/st"), ("pickle", "--allow-pickle"), ("st",)),
    Case("run-missing-base-model", ("run", "--base-model", "{tmp}/nope", "--state-dir", "{tmp}/st"), ("no such folder",), ("st",)),
    Case("run-bad-dataset", ("run", "--dataset", "{tmp}/baddata", "--state-dir", "{tmp}/st"), ("not UTF-8",), ("st",)),
    Case("run-dead-mlflow", ("run", "--state-dir", "{tmp}/st"), ("unreachable", "MLFLOW_TRACKING_URI"), ("st",),
         env={"MLFLOW_TRACKING_URI": "{dead}"}),
    Case("run-bad-steps", ("run", "--traffic-steps", "50,20", "--state-dir", "{tmp}/st"), ("traffic_steps",), ("st",)),
    Case("registry-dead-mlflow", ("registry", "--tracking-uri", "{dead}", "champion", "llm"), ("unreachable", "start the server")),
    Case("registry-unknown-model", ("registry", "--tracking-uri", "sqlite:///{tmp}/reg/mlflow.db", "history", "nope"),
         ("no registered model named 'nope'",)),
    Case("promote-dead-mlflow", ("promote", "--model", "llm", "--version", "1", "--backend", "local", "--tracking-uri", "{dead}", "--state-dir", "{tmp}/s"),
         ("unreachable",)),
    Case("evaluate-missing-model", ("evaluate", "{tmp}/nope", "{boot}/data/eval.jsonl", "--out", "{tmp}/o"), ("not a model folder",), ("o",)),
    Case("build-image-missing-folder", ("build-image", "{tmp}/nope", "oci-layout:{tmp}/img"), ("does not exist",), ("img",)),
    Case("bootstrap-out-of-range", ("bootstrap", "--out", "{tmp}/o", "--train", "0"), ("must be positive",), ("o",)),
    Case("submit-dead-host", ("submit", "--host", "http://127.0.0.1:9", "--experiment", "x"), ("cannot reach Kubeflow Pipelines", "--host")),
    Case("manifests-bad-name", ("manifests", "--namespace", "ns", "--model", "Bad_Name"), ("DNS-1035",)),
    Case("compile-bad-suffix", ("compile", "--out", "{tmp}/x.txt"), (".yaml",), ("x.txt",)),
    Case("down-unknown", ("down", "nothing", "--state-dir", "{tmp}/s"), ("no local InferenceService",), ("s",)),
    Case("query-no-service", ("query", "hi", "--state-dir", "{tmp}/q"), ("no local service", "llmops run")),
    Case("status-corrupt-state", ("status", "--state-dir", "{tmp}/cs"), ("unreadable",)),
]


def _write_inputs(tmp: Path, boot: Path) -> None:
    import shutil

    import torch
    from safetensors.torch import load_file

    for name in ("corrupt", "trunc", "badcfg", "pickle"):
        shutil.copytree(boot / "model", tmp / name)
    (tmp / "corrupt" / "model.safetensors").write_bytes(os.urandom(100))
    weights = (boot / "model" / "model.safetensors").read_bytes()
    (tmp / "trunc" / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    (tmp / "badcfg" / "config.json").write_text("{not json")
    torch.save(load_file(boot / "model" / "model.safetensors"), tmp / "pickle" / "pytorch_model.bin")
    (tmp / "pickle" / "model.safetensors").unlink()
    (tmp / "bad.jsonl").write_bytes(b'{"prompt": "a", "completion": "\xff\xfe"}\n')
    (tmp / "baddata").mkdir()
    for name in ("train.jsonl", "eval.jsonl"):
        (tmp / "baddata" / name).write_bytes((tmp / "bad.jsonl").read_bytes())
    uri = boot / "model"
    (tmp / "oops.yaml").write_text(ISVC.format(meta="{name: llm}", spec="{predictor: oops}"))
    (tmp / "list.yaml").write_text(ISVC.format(meta="{name: llm}", spec="[1, 2]"))
    (tmp / "digest.yaml").write_text(ISVC.format(meta="{name: llm}", spec=PRED.format(pct=10, uri="'oci://reg.example/m@sha256:xyz'")))
    (tmp / "pct.yaml").write_text(ISVC.format(meta="{name: llm}", spec=PRED.format(pct=150, uri=uri)))
    (tmp / "cs" / "serving").mkdir(parents=True)
    (tmp / "cs" / "serving" / "state.json").write_text("{bad")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, micro_model):
    tmp = tmp_path_factory.mktemp("bad-input")
    boot = tmp / "boot"
    (boot / "data").mkdir(parents=True)
    (boot / "model").symlink_to(micro_model)
    from components.bootstrap.dataset import write_task_dataset

    write_task_dataset(boot / "data", train=20, eval=5, test=5, seed=0)
    _write_inputs(tmp, boot)
    from serving.backends.local import LocalBackend
    from serving.rollout.state import STATE_ANNOTATION

    # a served service whose rollout state annotation got corrupted (its revision fails: no process needed)
    backend = LocalBackend(tmp / "rs", stop_timeout_s=2)
    backend.apply({
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "llm", "namespace": "default", "annotations": {STATE_ANNOTATION: "{not json"}},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "llmops-llm"}, "storageUri": str(tmp / "gone")}}},
    })
    yield tmp, boot
    backend.delete("llm", "default")


def _run(case: Case, tmp: Path, boot: Path) -> tuple[Case, subprocess.CompletedProcess, Path]:
    from tests.support.mlflow_server import free_port

    cwd = tmp / f"cwd-{case.id}"
    cwd.mkdir()
    fill = {"tmp": str(tmp / case.id), "boot": str(boot), "dead": f"http://127.0.0.1:{free_port()}"}
    (tmp / case.id).mkdir()
    for name in ("corrupt", "trunc", "badcfg", "pickle", "baddata", "bad.jsonl", "oops.yaml", "list.yaml",
                 "digest.yaml", "pct.yaml", "cs", "rs"):
        (tmp / case.id / name).symlink_to(tmp / name)
    argv = [a.format(**fill) for a in case.argv]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update({k: v.format(**fill) for k, v in case.env.items()})
    proc = subprocess.run([sys.executable, "-m", "pipelines", *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=240)
    return case, proc, tmp / case.id


@pytest.fixture(scope="module")
def results(workspace):
    tmp, boot = workspace
    with ThreadPoolExecutor(max_workers=4) as pool:
        return {case.id: (proc, where, cwd) for case, proc, where, cwd in
                ((c, p, w, tmp / f"cwd-{c.id}") for c, p, w in pool.map(lambda c: _run(c, tmp, boot), CASES))}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clear_line_exit_2_and_nothing_half_written(case, results):
    proc, where, cwd = results[case.id]
    err = proc.stderr
    assert "Traceback" not in err and "Traceback" not in proc.stdout, err
    assert proc.returncode == 2, (proc.returncode, err[-2000:])
    last = err.strip().splitlines()[-1]
    command = case.argv[0] if case.argv[0] != "registry" else f"registry {case.argv[3]}"
    assert last.startswith(f"llmops {command}: error: "), last
    assert "unexpected" not in last, last  # every row is an anticipated error, not a crash
    assert "\x1b[" not in last
    for text in case.expect:
        assert text in last, (text, last)
    for rel in case.absent:
        assert not (where / rel).exists(), f"{rel} was written: {sorted(p.name for p in where.iterdir())}"
    assert not (cwd / ".llmops").exists() and not (cwd / "rollout-reports").exists() or case.id == "rollout-corrupt-state"
