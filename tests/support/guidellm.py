"""Run GuideLLM (the vLLM project's benchmark client) against a server, from its own venv.

GuideLLM pins click and multidict below what the project's venv has, so ``scripts/setup.sh``
installs it into ``.venv-guidellm``; this module runs its CLI there and reads its JSON report.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GUIDELLM = REPO / ".venv-guidellm" / "bin" / "guidellm"
MISSING = f"GuideLLM is not installed at {GUIDELLM}: run `bash scripts/setup.sh` (it creates .venv-guidellm)"


def available() -> bool:
    """True when the GuideLLM venv exists."""
    return GUIDELLM.exists()


@dataclass(frozen=True)
class GuideLLMRun:
    """One ``guidellm run``: the server, the load shape and the SLO for goodput."""

    target: str  # base URL including /openai/v1 (GuideLLM strips /v1 and probes {rest}/health)
    model: str
    tokenizer: Path  # a local tokenizer folder (no hub access)
    concurrencies: tuple[int, ...] = (4,)
    requests: int | tuple[int, ...] = 16  # per concurrency level (one count, or one per level)
    prompt_tokens: int = 32
    output_tokens: int = 16
    stream: bool = True
    request_format: str = "/v1/chat/completions"
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None
    timeout_s: float = 300.0
    # where the client runs: CPU ids it is pinned to (None: wherever the OS puts it) and GuideLLM's worker
    # processes (its ``max_worker_processes`` setting, default 10: on a small box, one per client core)
    cpus: tuple[int, ...] | None = None
    worker_processes: int | None = None

    def validate(self) -> "GuideLLMRun":
        """Raises ValueError for a shape GuideLLM would reject."""
        if not self.concurrencies or min(self.concurrencies) < 1:
            raise ValueError(f"concurrencies must be >= 1, got {self.concurrencies}")
        counts = self.requests if isinstance(self.requests, tuple) else (self.requests,)
        if isinstance(self.requests, tuple) and len(counts) != len(self.concurrencies):
            raise ValueError(f"requests: one count per concurrency level, got {counts} for {self.concurrencies}")
        if min(counts) < 1 or self.prompt_tokens < 1 or self.output_tokens < 1:
            raise ValueError("requests, prompt_tokens and output_tokens must be >= 1")
        if self.worker_processes is not None and self.worker_processes < 1:
            raise ValueError(f"worker_processes must be >= 1, got {self.worker_processes}")
        if self.cpus is not None and not self.cpus:
            raise ValueError("cpus: give at least one CPU id, or None to leave the client unpinned")
        return self

    def argv(self, out_json: Path) -> list[str]:
        """The ``guidellm run`` command line."""
        first = self.concurrencies[0]
        if isinstance(self.requests, tuple):  # GuideLLM indexes a list of counts by sub-benchmark
            count = ",".join(f"count[{i}]={n}" for i, n in enumerate(self.requests))
        else:
            count = f"count={self.requests}"
        argv = [
            str(GUIDELLM), "run",
            "--backend", f"kind=openai_http,target={self.target},model={self.model},"
            f"request_format={self.request_format},stream={str(self.stream).lower()}",
            "--profile", f"kind=concurrent,streams={first}",
            "--constraint", f"kind=max_requests,{count}",
            "--data", f"kind=synthetic_text,prompt_tokens={self.prompt_tokens},output_tokens={self.output_tokens}",
            "--tokenizer", f"kind=huggingface_auto,model={self.tokenizer}",
            "--output", f"kind=json,path={out_json}",
            "--disable-console-interactive",
        ]  # fmt: skip
        if len(self.concurrencies) > 1:
            argv += ["--override", "profile.streams", ",".join(str(c) for c in self.concurrencies)]
        slo = {k: v for k, v in (("ttft_ms", self.slo_ttft_ms), ("tpot_ms", self.slo_tpot_ms)) if v is not None}
        if slo:
            argv += ["--metrics", json.dumps({"kind": "generative", "slo": slo})]
        return argv


def run(spec: GuideLLMRun, work_dir: Path) -> list[dict]:
    """Run GuideLLM and return its benchmarks (one per concurrency), as in its JSON report.

    Raises:
        RuntimeError: GuideLLM exited non-zero (its output tail is in the message).
    """
    spec.validate()
    out = work_dir / "guidellm.json"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", GUIDELLM__LOGGING__CONSOLE_LOG_LEVEL="WARNING")
    if spec.worker_processes is not None:
        env["GUIDELLM__MAX_WORKER_PROCESSES"] = str(spec.worker_processes)
    cpus = spec.cpus
    proc = subprocess.run(
        spec.argv(out), cwd=work_dir, env=env, capture_output=True, text=True, timeout=spec.timeout_s, check=False,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,  # inherited by its workers
    )
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"guidellm exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return json.loads(out.read_text())["benchmarks"]


def summary(benchmark: dict) -> dict:
    """The figures the serving benchmark reports, from one GuideLLM benchmark (seconds, tokens/s)."""
    m = benchmark["metrics"]

    def stat(name: str, key: str, scale: float = 1.0) -> float | None:
        s = m[name]["successful"]
        if not s or not s.get("count"):
            return None
        value = s["median"] if key == "p50" else s["percentiles"][key]
        return value * scale

    return {
        "concurrency": benchmark["config"]["strategy"].get("streams"),
        "requests": m["request_totals"],
        "ttft_p50_s": stat("time_to_first_token_ms", "p50", 1e-3),
        "ttft_p99_s": stat("time_to_first_token_ms", "p99", 1e-3),
        "itl_p50_s": stat("inter_token_latency_ms", "p50", 1e-3),
        "itl_p99_s": stat("inter_token_latency_ms", "p99", 1e-3),
        "tpot_p50_s": stat("time_per_output_token_ms", "p50", 1e-3),
        "e2e_p50_s": stat("request_latency", "p50"),
        "e2e_p99_s": stat("request_latency", "p99"),
        "output_tok_per_s": m["output_tokens_per_second"]["successful"]["mean"],
        "output_tokens_mean": m["output_token_count"]["successful"]["mean"],
        "slo_attainment": m.get("slo_attainment"),
        "goodput": m.get("request_goodput"),
    }
