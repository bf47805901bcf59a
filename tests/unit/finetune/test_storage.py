"""Checkpoints on shared storage: a retried task on a fresh pod resumes from the bucket (fsspec memory://)."""

import shutil

import pytest

from components.finetune import CheckpointError, FinetuneConfig, finetune
from components.finetune.storage import CheckpointStore, filesystem


class Interrupt(Exception):
    pass


def _weights(model_dir):
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


def test_retried_task_on_a_fresh_pod_resumes_from_the_remote_checkpoint(micro_model, task_data, tmp_path):
    import torch

    uri = f"memory://llmops-test/{tmp_path.name}/ckpt"
    cfg = FinetuneConfig(max_steps=12, batch_size=8, checkpoint_every=5, keep_checkpoints=1, log_every=4, seed=2)
    reference = finetune(micro_model, task_data["train"], tmp_path / "ref", cfg)

    def crash(step, loss):
        if step == 7:
            raise Interrupt("pod evicted")

    with pytest.raises(Interrupt):
        finetune(micro_model, task_data["train"], tmp_path / "pod-1", cfg, on_step=crash, checkpoint_uri=uri)
    fs, root = filesystem(uri)
    assert fs.exists(f"{root}/step-0000005/state.json") and fs.exists(f"{root}/step-0000005/trainable.safetensors")
    shutil.rmtree(tmp_path / "pod-1")  # the retry runs on another pod: nothing local survives

    resumed = finetune(micro_model, task_data["train"], tmp_path / "pod-2", cfg, checkpoint_uri=uri)
    assert resumed.resumed_from_step == 5 and resumed.steps == 12
    ref_w, res_w = _weights(reference.model_dir), _weights(resumed.model_dir)
    assert all(torch.equal(ref_w[k], res_w[k]) for k in ref_w)
    assert [p.rsplit("/", 1)[-1] for p in fs.glob(f"{root}/step-*")] == ["step-0000010"]  # pruned to keep_checkpoints


def test_incomplete_remote_checkpoint_is_ignored(tmp_path):
    uri = f"memory://llmops-test/{tmp_path.name}/partial"
    fs, root = filesystem(uri)
    fs.pipe(f"{root}/step-0000004/trainable.safetensors", b"half-written")  # no state.json: the upload was cut
    assert CheckpointStore(uri, cache=tmp_path / "cache").latest() is None


def test_unknown_storage_protocol_names_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match=r"nosuch://b/ckpt: cannot open nosuch:// storage"):
        CheckpointStore("nosuch://b/ckpt", cache=tmp_path).latest()
