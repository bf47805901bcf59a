import json

import pytest

from components.finetune import (
    CheckpointError,
    DatasetError,
    FinetuneConfig,
    FinetuneConfigError,
    finetune,
    load_dataset,
)
from components.finetune.data import IGNORE

FAST = dict(max_steps=8, batch_size=8, checkpoint_every=0, log_every=4)


@pytest.fixture(scope="module")
def micro_tok(micro_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(micro_model)


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_prompt_tokens_and_padding_carry_no_loss(micro_tok, tmp_path):
    f = _write(tmp_path / "d.jsonl", [json.dumps({"prompt": "Q: uppercase abc\nA:", "completion": " ABC"})])
    ex = load_dataset(f, micro_tok, 64).examples[0]
    n_prompt = len(micro_tok("Q: uppercase abc\nA:").input_ids)
    assert ex.labels[:n_prompt] == [IGNORE] * n_prompt
    assert ex.labels[n_prompt:] == ex.input_ids[n_prompt:]
    assert ex.input_ids[-1] == micro_tok.eos_token_id
    assert micro_tok.decode(ex.labels[n_prompt:-1]) == " ABC"


def test_chat_records_learn_only_assistant_turns(micro_tok, tmp_path):
    rec = {"messages": [{"role": "user", "content": "uppercase abc"}, {"role": "assistant", "content": "ABC"}]}
    ex = load_dataset(_write(tmp_path / "c.jsonl", [json.dumps(rec)]), micro_tok, 64).examples[0]
    learned = micro_tok.decode([t for t in ex.labels if t != IGNORE])
    assert learned.startswith(" ABC<|endoftext|>")
    assert "uppercase" not in learned and "Q:" not in learned
    assert micro_tok.decode(ex.input_ids).startswith("Q: uppercase abc\nA: ABC")


@pytest.mark.parametrize(
    "lines, message",
    [
        (None, "file not found"),
        ([], "is empty"),
        (['{"prompt": "a", "completion": " b"}', '{"prompt": "a", "completion"'], r"d.jsonl:2: malformed JSON"),
        (['{"input": "a", "output": "b"}'], r"d.jsonl:1: unexpected keys \['input', 'output'\]; expected \{\"prompt\""),
        (['{"prompt": "a"}'], r"d.jsonl:1: missing key 'completion'"),
        (['{"prompt": "a", "completion": 3}'], r"d.jsonl:1: 'completion' must be a string, got int"),
        (['{"prompt": ["a"], "completion": "b"}'], r"d.jsonl:1: 'prompt' must be a string, got list"),
        (['{"messages": [{"role": "user", "content": "hi"}]}'], r"d.jsonl:1: 'messages' has no assistant turn"),
    ],
)
def test_bad_dataset_fails_before_training(micro_model, tmp_path, lines, message):
    f = tmp_path / "d.jsonl"
    if lines is not None:
        _write(f, lines)
    with pytest.raises(DatasetError, match=message) as info:
        finetune(micro_model, f, tmp_path / "out", FinetuneConfig(**FAST))
    assert info.value.path == f
    assert not (tmp_path / "out").exists()


def test_dataset_error_carries_the_line(micro_tok, tmp_path):
    f = _write(tmp_path / "d.jsonl", ['{"prompt": "a", "completion": " b"}', "", "not json"])
    with pytest.raises(DatasetError) as info:
        load_dataset(f, micro_tok, 64)
    assert info.value.line == 3


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("method", "qlora", "FinetuneConfig.method='qlora': unknown method; use one of full, lora"),
        ("learning_rate", 0.0, r"FinetuneConfig.learning_rate=0.0: must be in \(0, 1\]"),
        ("max_steps", 0, "FinetuneConfig.max_steps=0: must be a positive integer"),
        ("time_budget_s", -1.0, "FinetuneConfig.time_budget_s=-1.0: must be positive"),
        ("lora_dropout", 1.5, r"FinetuneConfig.lora_dropout=1.5: must be in \[0, 1\)"),
    ],
)
def test_config_validation_names_the_field(field, value, message):
    with pytest.raises(FinetuneConfigError, match=message):
        FinetuneConfig(**{field: value}).validate()


def test_same_seed_same_loss(micro_model, task_data, tmp_path):
    a = finetune(micro_model, task_data["train"], tmp_path / "a", FinetuneConfig(**FAST, seed=3))
    b = finetune(micro_model, task_data["train"], tmp_path / "b", FinetuneConfig(**FAST, seed=3))
    c = finetune(micro_model, task_data["train"], tmp_path / "c", FinetuneConfig(**FAST, seed=4))
    assert a.final_loss == b.final_loss
    assert a.final_loss != c.final_loss
    curve = json.loads(a.loss_curve_json.read_text())
    assert len(curve["loss"]) == 8 and a.loss_curve_png.stat().st_size > 1000
    assert a.loss_curve_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (a.model_dir / "model.safetensors").exists() and (a.model_dir / "tokenizer.json").exists()
    assert a.dataset_sha256 == json.loads((tmp_path / "a" / "finetune_result.json").read_text())["dataset_sha256"]


class Interrupt(Exception):
    pass


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_interrupted_run_resumes_from_last_checkpoint(micro_model, task_data, tmp_path):
    import torch

    cfg = FinetuneConfig(max_steps=20, batch_size=8, checkpoint_every=10, log_every=5, seed=1)
    reference = finetune(micro_model, task_data["train"], tmp_path / "ref", cfg)

    def crash(step, loss):
        if step == 13:
            raise Interrupt("simulated kill")

    with pytest.raises(Interrupt):
        finetune(micro_model, task_data["train"], tmp_path / "run", cfg, on_step=crash)
    assert not (tmp_path / "run" / "model").exists()
    assert (tmp_path / "run" / "checkpoints" / "step-0000010").exists()

    seen = []
    resumed = finetune(micro_model, task_data["train"], tmp_path / "run", cfg, on_step=lambda s, l: seen.append(s))
    assert resumed.resumed_from_step == 10 and seen[0] == 11 and resumed.steps == 20
    assert len(json.loads(resumed.loss_curve_json.read_text())["loss"]) == 20
    ref_w, res_w = _weights(reference.model_dir), _weights(resumed.model_dir)
    assert ref_w.keys() == res_w.keys()
    assert all(torch.equal(ref_w[k], res_w[k]) for k in ref_w)
    assert resumed.final_loss == reference.final_loss


def test_checkpoints_of_another_run_are_refused(micro_model, task_data, tmp_path):
    cfg = FinetuneConfig(max_steps=6, batch_size=4, checkpoint_every=3, log_every=3)
    with pytest.raises(Interrupt):
        finetune(micro_model, task_data["train"], tmp_path / "run", cfg,
                 on_step=lambda s, l: (_ for _ in ()).throw(Interrupt()) if s == 4 else None)
    with pytest.raises(CheckpointError, match="different config fingerprint.*delete"):
        finetune(micro_model, task_data["train"], tmp_path / "run", FinetuneConfig(**{**cfg.to_dict(), "learning_rate": 1e-4}))


def test_time_budget_stops_early_with_an_injected_clock(micro_model, task_data, tmp_path):
    ticks = iter(range(1000))
    r = finetune(micro_model, task_data["train"], tmp_path / "out",
                 FinetuneConfig(max_steps=50, batch_size=4, time_budget_s=5, checkpoint_every=0, log_every=5),
                 clock=lambda: float(next(ticks)))
    assert r.stopped_by == "time_budget" and 0 < r.steps < 50
    assert (r.model_dir / "model.safetensors").exists()


def test_lora_merged_and_adapter_outputs(micro_model, task_data, tmp_path):
    from transformers import AutoModelForCausalLM

    merged = finetune(micro_model, task_data["train"], tmp_path / "m",
                      FinetuneConfig(**{**FAST, "learning_rate": 1e-2}, method="lora", lora_r=4))
    names = {p.name for p in merged.model_dir.iterdir()}
    assert "model.safetensors" in names and "adapter_config.json" not in names
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in merged.adapter_dir.iterdir()}
    base = _weights(micro_model)
    tuned = _weights(merged.model_dir)
    assert any(not (base[k] == tuned[k]).all() for k in base if k in tuned)  # the adapter changed weights
    AutoModelForCausalLM.from_pretrained(merged.model_dir)

    unmerged = finetune(micro_model, task_data["train"], tmp_path / "u",
                        FinetuneConfig(**FAST, method="lora", lora_r=4, merge_adapter=False))
    assert (unmerged.model_dir / "adapter_config.json").exists() and (unmerged.model_dir / "tokenizer.json").exists()
    from components.evaluate.scoring import load_model

    model, tok, _ = load_model(unmerged.model_dir)
    assert model(**tok("Q: hi", return_tensors="pt")).logits.shape[-1] == len(tok)
