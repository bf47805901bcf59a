"""MLflow ``python_function`` loader for a plain Hugging Face causal-LM folder.

This file is copied into every registered version as ``code/llmops_hf_pyfunc.py``
and named as the pyfunc ``loader_module``, so ``mlflow.pyfunc.load_model`` works
wherever ``transformers`` and ``torch`` are installed, without llmops and
without unpickling anything. It imports only the standard library at module
level. The weights are loaded with ``use_safetensors=True`` and
``trust_remote_code=False``.

Input: a string, a list of strings, or a DataFrame with a ``prompt`` column.
Output: a list of completions (the generated text after each prompt).
Params: ``max_new_tokens`` (default 16), ``temperature`` (0 = greedy, default 0).
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_MAX_NEW_TOKENS = 16


def _prompts(model_input) -> list[str]:
    if isinstance(model_input, str):
        return [model_input]
    columns = getattr(model_input, "columns", None)
    if columns is not None:  # a pandas DataFrame
        column = "prompt" if "prompt" in columns else columns[0]
        return [str(v) for v in model_input[column].tolist()]
    if isinstance(model_input, dict):
        value = model_input.get("prompt", model_input.get("prompts"))
        return _prompts(value)
    return [str(v) for v in model_input]


class HFTextGenerator:
    """Greedy (or sampled) text generation with a Hugging Face causal LM on CPU."""

    def __init__(self, model_dir: str | Path):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_dir = Path(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, trust_remote_code=False)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(
            self.model_dir, trust_remote_code=False, use_safetensors=True
        )
        self.model.eval()

    def predict(self, model_input, params: dict | None = None) -> list[str]:
        import torch

        params = params or {}
        prompts = _prompts(model_input)
        if not prompts:
            return []
        max_new_tokens = int(params.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)
        temperature = float(params.get("temperature") or 0.0)
        limit = getattr(self.model.config, "n_positions", None) or getattr(
            self.model.config, "max_position_embeddings", None
        )
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True)
        if limit and batch["input_ids"].shape[1] + max_new_tokens > limit:
            max_new_tokens = max(1, limit - batch["input_ids"].shape[1])
        kwargs = {"max_new_tokens": max_new_tokens, "pad_token_id": self.tokenizer.pad_token_id}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature)
        else:
            kwargs.update(do_sample=False)
        with torch.no_grad():
            out = self.model.generate(**batch, **kwargs)
        new_tokens = out[:, batch["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


def _load_pyfunc(data_path: str, model_config: dict | None = None) -> HFTextGenerator:
    """MLflow's pyfunc entry point: ``data_path`` is the Hugging Face folder."""
    return HFTextGenerator(data_path)
