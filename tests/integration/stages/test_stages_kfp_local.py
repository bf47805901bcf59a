"""import -> fine-tune -> evaluate through kfp.local (SubprocessRunner, this virtualenv)."""

import json
from pathlib import Path
from typing import NamedTuple

import pytest
from kfp import dsl, local
from kfp.dsl import HTML, Dataset, Markdown, Metrics, Model, Output

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dsl.component(base_image="python:3.11")
def task_data(train: Output[Dataset], eval_split: Output[Dataset], n_train: int = 300, n_eval: int = 8):
    from components.bootstrap.dataset import generate, write_jsonl

    write_jsonl(generate("train", n_train), train.path)
    write_jsonl(generate("eval", n_eval), eval_split.path)


def test_import_finetune_evaluate_through_kfp_local(tmp_path, monkeypatch):
    from components.evaluate.component import evaluate
    from components.finetune.component import finetune
    from components.import_model.component import import_model

    monkeypatch.setenv("LLMOPS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # shared CPUs: one thread per task is fastest
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))

    @dsl.pipeline
    def stages() -> NamedTuple("Outputs", imported=Model, tuned=Model, ft_metrics=Metrics, curve=HTML,
                               ev_metrics=Metrics, report=Markdown, digest=str, final_loss=float, passed=bool):
        imp = import_model(source="bootstrap://tiny")
        data = task_data()
        ft = finetune(base_model=imp.outputs["model"], train_data=data.outputs["train"], max_steps=6,
                      config_json=json.dumps({"batch_size": 8, "checkpoint_every": 0}))
        ev = evaluate(model=ft.outputs["tuned_model"], eval_data=data.outputs["eval_split"],
                      reference_metrics_json=json.dumps({"exact_match": 0.0, "perplexity": 1e9}))
        Outputs = NamedTuple("Outputs", imported=Model, tuned=Model, ft_metrics=Metrics, curve=HTML,
                             ev_metrics=Metrics, report=Markdown, digest=str, final_loss=float, passed=bool)
        return Outputs(imported=imp.outputs["model"], tuned=ft.outputs["tuned_model"], ft_metrics=ft.outputs["metrics"],
                       curve=ft.outputs["loss_curve"], ev_metrics=ev.outputs["metrics"], report=ev.outputs["report"],
                       digest=imp.outputs["Output"], final_loss=ft.outputs["Output"], passed=ev.outputs["Output"])

    out = stages().outputs
    model_dir = Path(out["imported"].path)
    assert (model_dir / "model.safetensors").exists() and (model_dir / "llmops_manifest.json").exists()
    manifest = json.loads((model_dir / "llmops_manifest.json").read_text())
    assert out["digest"] == manifest["content_digest"]
    assert out["imported"].metadata["architecture"] == "GPT2LMHeadModel"

    tuned = Path(out["tuned"].path)
    assert (tuned / "model.safetensors").exists() and (tuned / "tokenizer.json").exists()
    ft_metrics = out["ft_metrics"].metadata
    assert ft_metrics["steps"] == 6.0 and ft_metrics["final_loss"] == pytest.approx(out["final_loss"])
    assert "data:image/png;base64," in Path(out["curve"].path).read_text()

    m = out["ev_metrics"].metadata
    assert m["examples"] == 8.0 and {"exact_match", "perplexity", "ttft_ms", "tokens_per_s", "gate_passed"} <= set(m)
    assert out["passed"] is True and m["gate_passed"] == 1.0
    report = Path(out["report"].path).read_text()
    assert "Gate verdict: ✅ PASSED" in report and "| exact match (%) |" in report
