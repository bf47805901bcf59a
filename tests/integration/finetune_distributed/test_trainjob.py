"""The fine-tune step on Kubeflow Trainer, as a cluster runs it: a TrainJob on the Kubernetes API emulator,
picked up by the Trainer stand-in, trained by 2 real torchrun processes, the model handed to the next step."""

import json
from pathlib import Path

import pytest
import yaml
from kfp import dsl, local
from kfp.dsl import Dataset, Metrics, Model, Output

from components.finetune import FinetuneConfig, FinetuneError
from components.finetune.trainjob import (
    TrainJobClient,
    TrainJobError,
    TrainJobOptions,
    render_trainjob,
    run_on_trainjob,
    stock_runtime_name,
    validate_trainjob,
)
from tests.support.trainer_standin import RUNTIME_FILE, TrainerEmulator, TrainerStandIn

pytestmark = [pytest.mark.integration]

NS = "llmops"
CONFIG = {"max_steps": 8, "batch_size": 8, "checkpoint_every": 4, "log_every": 4}
SHARED_RUNTIME = Path(__file__).resolve().parents[3].parent / "shared" / "trainer" / "torch_distributed.yaml"


def _options(pvc: Path, **kw) -> TrainJobOptions:
    return TrainJobOptions(storage_uri=str(pvc), pvc_name="llmops-data", namespace=NS, num_nodes=1, procs_per_node=2,
                           poll_interval_s=0.3, timeout_s=300, **kw)


def test_trainjob_validates_against_the_crd_and_names_the_stock_runtime(tmp_path):
    opts = TrainJobOptions(storage_uri="/mnt/llmops", pvc_name="llmops-data", num_nodes=2, procs_per_node=4,
                           gpus_per_node=4, memory_per_node="64Gi").validate()
    obj = render_trainjob("llmops-ft-x", opts, model_uri="/mnt/llmops/m", data_uri="/mnt/llmops/d.jsonl",
                          out_uri="/mnt/llmops/o", checkpoint_uri="/mnt/llmops/c", config=FinetuneConfig())
    runtime = yaml.safe_load(RUNTIME_FILE.read_text())
    assert obj["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": runtime["kind"],
                                         "name": runtime["metadata"]["name"]} and stock_runtime_name() == "torch-distributed"
    trainer = obj["spec"]["trainer"]
    assert trainer["command"] == ["torchrun"] and trainer["args"][:2] == ["-m", "components.finetune.distributed"]
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 4
    assert trainer["resourcesPerNode"]["limits"] == {"nvidia.com/gpu": "4", "memory": "64Gi"}
    patched = obj["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    pod = patched["template"]["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "llmops-data"
    assert pod["containers"][0]["volumeMounts"][0]["mountPath"] == "/mnt/llmops"
    if SHARED_RUNTIME.exists():  # the packaged copy is Trainer's file, unchanged
        assert SHARED_RUNTIME.read_text() == RUNTIME_FILE.read_text()

    broken = json.loads(json.dumps(obj))
    broken["spec"]["trainer"]["numNodes"] = "two"
    with pytest.raises(TrainJobError, match=r"spec.trainer.numNodes: 'two' is not of type 'integer'"):
        validate_trainjob(broken)


@pytest.mark.parametrize("fields, message", [
    ({}, r"storage_uri='': a TrainJob needs shared storage"),
    ({"storage_uri": "relative/dir"}, r"must be an absolute path \(a mounted PVC\) or an s3:// / gs:// URI"),
    ({"storage_uri": "/pvc", "procs_per_node": 0}, r"procs_per_node=0: must be an integer >= 1"),
    ({"storage_uri": "/pvc", "gpus_per_node": 1, "procs_per_node": 2}, r"more processes than GPUs per node"),
    ({"storage_uri": "s3://b/p", "pvc_name": "x"}, r"give storage_uri as that path"),
    ({"storage_uri": "/pvc", "strategy": "zero3"}, r"unknown distributed strategy 'zero3'; use one of ddp, fsdp"),
])
def test_bad_trainjob_options_name_the_field(fields, message):
    with pytest.raises(TrainJobError, match=message):
        TrainJobOptions(**fields).validate()


def test_unknown_option_and_indivisible_batch_are_refused_before_submitting(micro_model, small_data, tmp_path):
    with pytest.raises(TrainJobError, match=r"unknown TrainJobOptions fields: gpus; known: storage_uri"):
        TrainJobOptions.from_json('{"gpus": 2}')
    with pytest.raises(FinetuneError, match=r"batch_size=9 does not divide over 2 processes"):
        run_on_trainjob(micro_model, small_data["train"], tmp_path, FinetuneConfig(batch_size=9), _options(tmp_path),
                        client=object())


def test_api_refuses_a_trainjob_whose_runtime_is_not_installed(micro_model, small_data, tmp_path):
    with TrainerEmulator(namespace=NS, install_stock_runtime=False) as kube:
        client = TrainJobClient(_api(kube))
        with pytest.raises(TrainJobError, match=r"answered 403: .*specified clusterTrainingRuntime must be created"):
            run_on_trainjob(micro_model, small_data["train"], tmp_path / "work", FinetuneConfig(**CONFIG),
                            _options(tmp_path / "pvc"), client=client, on_line=lambda _: None)
        assert ("create", "trainjobs") in kube.calls and not kube.handler.objects.get(("trainjobs", NS, "x"))


def _api(kube):
    import kubernetes

    return kubernetes.client.ApiClient(kube.client_configuration())


def test_failed_trainjob_fails_the_step_with_the_jobs_reason(micro_model, tmp_path):
    bad = tmp_path / "train.jsonl"
    bad.write_text('{"prompt": "Q: a\\nA:", "completion": " A"}\n{"prompt": "Q: b\\nA:", "completion"\n')
    fail_fast = yaml.safe_load(RUNTIME_FILE.read_text())
    fail_fast["metadata"]["name"] = "torch-distributed-fail-fast"
    fail_fast["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["backoffLimit"] = 0
    lines: list[str] = []
    with TrainerEmulator(namespace=NS) as kube, TrainerStandIn(kube, tmp_path / "nodes") as trainer:
        kube.install_runtime(fail_fast)
        with pytest.raises(TrainJobError) as info:
            run_on_trainjob(micro_model, bad, tmp_path / "work", FinetuneConfig(**CONFIG),
                            _options(tmp_path / "pvc", runtime="torch-distributed-fail-fast"),
                            client=TrainJobClient(_api(kube)), on_line=lines.append)
        assert not trainer.errors
        (name,) = [key.split("/")[1] for key in trainer.runs]
        job = kube.trainjob(name)
    msg = str(info.value)
    assert f"TrainJob {NS}/{name} failed: FailedJobs: jobset failed due to one or more job failures " \
           f"(first failed job: {name}-node-0)" in msg
    assert "the trainer reported DatasetError" in msg and "train.jsonl:2: malformed JSON" in msg
    (failed,) = [c for c in job["status"]["conditions"] if c["type"] == "Failed"]
    assert failed["status"] == "True" and job["status"]["jobsStatus"][0]["failed"] == 1
    assert not (tmp_path / "work" / "model").exists()
    assert any(line.startswith("trainjob: trainer error DatasetError") for line in lines)


@dsl.component(base_image="python:3.11")
def task_data(train: Output[Dataset], eval_split: Output[Dataset], n_train: int = 200, n_eval: int = 6):
    from components.bootstrap.dataset import generate, write_jsonl

    write_jsonl(generate("train", n_train), train.path)
    write_jsonl(generate("eval", n_eval), eval_split.path)


@pytest.mark.slow
def test_pipeline_step_trains_on_a_trainjob_and_the_next_step_uses_its_model(tmp_path, monkeypatch, capfd):
    from components.evaluate.component import evaluate
    from components.finetune.component import finetune
    from components.import_model.component import import_model

    with TrainerEmulator(namespace=NS) as kube, TrainerStandIn(kube, tmp_path / "nodes") as trainer:
        monkeypatch.setenv("KUBECONFIG", kube.write_kubeconfig(tmp_path / "kubeconfig"))
        monkeypatch.setenv("LLMOPS_CACHE", str(tmp_path / "cache"))
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
        options = json.dumps({"storage_uri": str(tmp_path / "pvc"), "pvc_name": "llmops-data", "namespace": NS,
                              "num_nodes": 1, "procs_per_node": 2, "poll_interval_s": 0.3})

        @dsl.pipeline
        def on_trainer() -> Metrics:
            imp = import_model(source="bootstrap://micro")
            data = task_data()
            ft = finetune(base_model=imp.outputs["model"], train_data=data.outputs["train"], max_steps=8,
                          config_json=json.dumps({"batch_size": 8, "checkpoint_every": 4, "log_every": 4}),
                          trainer="trainjob", trainjob_json=options)
            ev = evaluate(model=ft.outputs["tuned_model"], eval_data=data.outputs["eval_split"],
                          reference_metrics_json=json.dumps({"exact_match": 0.0, "perplexity": 1e9}))
            return ev.outputs["metrics"]

        metrics = on_trainer().output
        assert not trainer.errors
        (key,) = trainer.runs
        job = kube.trainjob(key.split("/")[1])
        node_log = trainer.node_log(key)
    (complete,) = [c for c in job["status"]["conditions"] if c["type"] == "Complete"]
    assert complete["reason"] == "AllJobsCompleted" and job["status"]["jobsStatus"][0]["succeeded"] == 1
    assert "rank1" in node_log and "rank0" in node_log  # two real ranks trained
    result = json.loads((tmp_path / "pvc" / key.split("/")[1] / "output" / "finetune_result.json").read_text())
    assert result["world_size"] == 2 and result["steps"] == 8
    assert metrics.metadata["examples"] == 6.0 and "exact_match" in metrics.metadata  # evaluate ran on its model
    logs = capfd.readouterr()
    text = logs.out + logs.err
    assert "trainjob: step 8/8 loss" in text and f"trainjob: {key} complete" in text
    # rank 0's own log lines reach the step's log (no pods/log access needed)
    assert "trainjob rank0 INFO: checkpoint saved at step 4" in text and "trainjob rank0 INFO: fine-tune done" in text



def test_retried_step_attaches_to_its_running_trainjob_and_replaces_a_failed_one():
    opts = TrainJobOptions(storage_uri="/mnt/llmops", namespace=NS)
    obj = render_trainjob("llmops-ft-retry", opts, model_uri="/mnt/llmops/m", data_uri="/mnt/llmops/d.jsonl",
                          out_uri="/mnt/llmops/o", checkpoint_uri="/mnt/llmops/c", config=FinetuneConfig())
    with TrainerEmulator(namespace=NS) as kube:  # no controller: the job stays as written
        client = TrainJobClient(_api(kube))
        first = client.submit(obj)
        again = client.submit(obj)  # the retried step: same inputs, same name
        assert again["metadata"]["uid"] == first["metadata"]["uid"]
        kube.custom_api().patch_namespaced_custom_object_status(
            "trainer.kubeflow.org", "v1alpha1", NS, "trainjobs", "llmops-ft-retry",
            {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "FailedJobs", "message": "x",
                                        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
        replaced = client.submit(obj)
        assert replaced["metadata"]["uid"] != first["metadata"]["uid"] and not replaced.get("status")
        assert kube.calls.count(("delete", "trainjobs")) == 1


def test_fsdp_with_checkpoints_is_refused_before_submitting(micro_model, small_data, tmp_path):
    with pytest.raises(TrainJobError, match=r"strategy fsdp writes no checkpoints yet: set checkpoint_every=0"):
        run_on_trainjob(micro_model, small_data["train"], tmp_path, FinetuneConfig(batch_size=8),
                        _options(tmp_path, strategy="fsdp"), client=object())
