"""KFP component of the fine-tune step: calls :func:`components.finetune.finetune` and nothing else."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from components.images import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def finetune(
    base_model: Input[Model],
    train_data: Input[Dataset],
    tuned_model: Output[Model],
    metrics: Output[Metrics],
    loss_curve: Output[HTML],
    method: str = "full",
    max_steps: int = 600,
    config_json: str = "{}",
    checkpoint_dir: str = "",
    enabled: bool = True,
    trainer: str = "pod",
    trainjob_json: str = "{}",
) -> float:
    """Fine-tune ``base_model`` on ``train_data`` (JSONL); returns the final training loss.

    ``config_json`` holds any other :class:`FinetuneConfig` fields. Give ``checkpoint_dir``
    a persistent volume path, or an ``s3://`` / ``gs://`` URI, to resume a retried task from its
    last checkpoint. With ``enabled=False`` the base model passes through unchanged (no
    fine-tune; returns 0.0). ``trainer="trainjob"`` runs the fine-tune as a Kubeflow Trainer
    TrainJob shaped by ``trainjob_json`` (:class:`TrainJobOptions` fields: storage_uri,
    num_nodes, procs_per_node, gpus_per_node, image, ...), streams its progress here and
    hands its model on; ``"pod"`` (default) trains in this step's pod.
    """
    import base64
    import dataclasses
    import json
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from components.finetune import FinetuneConfig
    from components.finetune import finetune as run_finetune
    from components.finetune.trainjob import TrainerKind, TrainJobOptions, run_on_trainjob

    kind = TrainerKind.parse(trainer)

    if not enabled:  # fine-tuning switched off: the base model is the candidate
        shutil.copytree(base_model.path, tuned_model.path, dirs_exist_ok=True)
        tuned_model.metadata.update({"method": "none", "steps": 0, "base_model": base_model.uri})
        metrics.log_metric("steps", 0.0)
        Path(metrics.path).write_text(json.dumps(metrics.metadata))
        Path(loss_curve.path).write_text("<html><body><h3>fine-tune skipped (finetune=false)</h3></body></html>")
        print("fine-tune skipped: the base model is the candidate")
        return 0.0

    config = FinetuneConfig.from_dict({**json.loads(config_json or "{}"), "method": method, "max_steps": max_steps})
    remote_ckpt = "://" in checkpoint_dir
    work = Path(checkpoint_dir) if checkpoint_dir and not remote_ckpt else Path(tempfile.mkdtemp(prefix="llmops-finetune-"))
    if kind is TrainerKind.TRAINJOB:
        options = TrainJobOptions.from_json(trainjob_json)
        if checkpoint_dir and not options.checkpoint_uri:
            options = dataclasses.replace(options, checkpoint_uri=checkpoint_dir)
        result = run_on_trainjob(base_model.path, train_data.path, work, config, options)
    else:
        result = run_finetune(base_model.path, train_data.path, work, config,
                              checkpoint_uri=checkpoint_dir if remote_ckpt else None)
    if os.path.exists(tuned_model.path):
        shutil.rmtree(tuned_model.path)
    shutil.copytree(result.model_dir, tuned_model.path)
    for name in ("steps", "final_loss", "tokens_per_s", "wall_s"):
        metrics.log_metric(name, float(getattr(result, name)))
    tuned_model.metadata.update({"method": result.method, "steps": result.steps, "final_loss": result.final_loss,
                                 "dataset_sha256": result.dataset_sha256, "base_model": base_model.uri,
                                 "trainer": kind.value, "world_size": result.world_size})
    png = base64.b64encode(result.loss_curve_png.read_bytes()).decode()
    Path(loss_curve.path).write_text(
        f"<html><body><h3>{result.method} fine-tune: {result.steps} steps, final loss {result.final_loss:.4f}</h3>"
        f'<img alt="loss curve" src="data:image/png;base64,{png}"/></body></html>'
    )
    # Metrics live in the artifact's metadata; a file at its path lets kfp.local's cache reuse this step
    Path(metrics.path).write_text(json.dumps(metrics.metadata))
    return float(result.final_loss)
