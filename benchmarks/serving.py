"""Serving benchmark in the field's terms, GuideLLM as the load client, ratios to in-process ``generate``.

    python benchmarks/serving.py [--model_dir DIR] [--threads 1] [--concurrency 1,4,16,64]
                                 [--prompt_tokens 32] [--output_tokens 64] [--out results.json]

One run measures, side by side:
  * in-process ``model.generate`` (greedy, exactly --output_tokens via min_new_tokens) at batch B for each
    concurrency B: end-to-end latency, time to first token (a 1-token generate of the same batch), time per
    output token, output tokens/s; measured right before and right after each GuideLLM run at the same batch
    size, and each server figure is divided by the mean of its own pair (this machine's speed drifts by tens
    of percent within minutes: a pair a few seconds apart cancels most of it);
  * ``python -m serving`` at the same torch thread count, loaded by GuideLLM (``guidellm run``, its own venv,
    ``/v1/completions``, synthetic prompts of --prompt_tokens, ``ignore_eos`` so each answer has
    --output_tokens) at concurrency 1, 4, 16 and 64, streamed and non-streamed: TTFT, ITL, TPOT,
    end-to-end latency p50/p99, output tokens/s, and goodput under the SLO (--slo_ttft_ms, --slo_itl_ms;
    GuideLLM's ``slo_attainment``: share of requests meeting both; non-streamed requests have no TTFT of
    their own, so GuideLLM leaves them undetermined).
CPU layout: a load generator shares no cores with the server it measures (it runs on another machine in
any serious setup). With more CPUs than --threads, the benchmark pins itself, its in-process runs and the
server to --server_cpus (default: the first --threads CPUs it may use) and GuideLLM to --client_cpus
(default: the rest), with one GuideLLM worker process per client CPU (GuideLLM's own default, 10 workers,
is sized for a load-generator machine and would take the server's core here). --no_pin shares every CPU.
Reported ratios: server output tokens/s / in-process tokens/s at the same concurrency (target >= 0.90 at
16), and server p50 latency / in-process batch-1 latency at concurrency 1 (target <= 1.10). Greedy output
batched vs alone is checked by tests/unit/serving_runtime/test_runtime_engine.py (0 mismatches).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from serving.runtime.config import KV_CACHES  # noqa: E402  (after the path: run as a script)


class InProcess:
    """``generate`` on the same model and thread count as the server, measured per batch size."""

    def __init__(self, model_dir: Path, prompt_tokens: int, output_tokens: int, rounds: int):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        self.gen = torch.Generator().manual_seed(0)
        self.prompt_tokens, self.output_tokens, self.rounds = prompt_tokens, output_tokens, rounds

    def _run(self, batch: int, n_new: int) -> float:
        torch = self.torch
        ids = torch.randint(3, len(self.tok), (batch, self.prompt_tokens), generator=self.gen)
        t0 = time.perf_counter()
        with torch.no_grad():
            self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new,
                                min_new_tokens=n_new, do_sample=False, pad_token_id=self.tok.pad_token_id)  # fmt: skip
        return time.perf_counter() - t0

    def measure(self, batch: int) -> dict:
        """{e2e_p50_s, ttft_p50_s, tpot_s, tok_per_s} at ``batch`` (median of ``rounds``)."""
        self._run(batch, 2)  # warm-up
        e2e = [self._run(batch, self.output_tokens) for _ in range(self.rounds)]
        ttft = [self._run(batch, 1) for _ in range(self.rounds)]
        p50, first = statistics.median(e2e), statistics.median(ttft)
        return {"e2e_p50_s": p50, "ttft_p50_s": first, "tpot_s": (p50 - first) / (self.output_tokens - 1),
                "tok_per_s": batch * self.output_tokens / p50}  # fmt: skip


def forward_passes(url: str) -> tuple[float, float]:
    """(forward passes, sequences over all passes) so far, from the server's ``llmops_batch_size`` histogram."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    count = total = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
        if family.name == "llmops_batch_size":
            for sample in family.samples:
                if sample.name.endswith("_count"):
                    count += sample.value
                elif sample.name.endswith("_sum"):
                    total += sample.value
    return count, total


def mean_of(a: dict, b: dict) -> dict:
    return {k: (a[k] + b[k]) / 2 for k in a}


def median_run(rows: list[dict]) -> dict:
    """The run whose throughput ratio is the median (the lower middle one of an even count)."""
    ordered = sorted(rows, key=lambda r: r["ratio"]["throughput"])
    return ordered[(len(ordered) - 1) // 2]


def spread(values) -> tuple[float, float]:
    vs = list(values)
    return min(vs), max(vs)


def parse_cpus(text: str) -> tuple[int, ...]:
    """``"0,2-3"`` -> ``(0, 2, 3)``; an argparse type (a bad list exits 2 with one line)."""
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            out.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a CPU list such as 0 or 0,2-3") from None
    if not out:
        raise argparse.ArgumentTypeError(f"{text!r} names no CPU (a range must go upwards, e.g. 2-3)")
    return tuple(sorted(set(out)))


def cpu_layout(args) -> dict:
    """Which CPUs the server (and in-process runs) and GuideLLM get; see the module docstring."""
    mine = sorted(os.sched_getaffinity(0))
    if args.no_pin:
        return {"server": None, "client": None, "note": f"CPUs: not pinned, server and client share {len(mine)}"}
    server = args.server_cpus or tuple(mine[: args.threads])
    client = args.client_cpus or tuple(c for c in mine if c not in server)
    if not client or set(server) & set(client):
        why = "no CPU is left for the client" if not client else "--server_cpus and --client_cpus overlap"
        return {"server": None, "client": None,
                "note": f"CPUs: not pinned ({why}); the client's work competes with the server's"}  # fmt: skip
    return {"server": server, "client": client,
            "note": f"CPUs: server and in-process runs on {list(server)}, GuideLLM on {list(client)} "
                    f"({len(client)} worker process{'es' if len(client) > 1 else ''})"}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", type=Path, default=None, help="default: the bootstrap tiny model")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, in-process and in the server")
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--prompt_tokens", type=int, default=32)
    parser.add_argument("--output_tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=8,
                        help="requests per client at each concurrency (min 16): enough waves for a steady state")
    parser.add_argument("--rounds", type=int, default=3, help="in-process repetitions per batch size")
    parser.add_argument("--repeats", type=int, default=3,
                        help="GuideLLM runs per concurrency and mode, each between its own in-process pair; the "
                        "reported ratio is their median, with the range (this machine drifts by tens of percent)")
    parser.add_argument("--slo_ttft_ms", type=float, default=500.0)
    parser.add_argument("--slo_itl_ms", type=float, default=50.0)
    parser.add_argument("--server_cpus", type=parse_cpus, default=None,
                        help="CPU ids for the server and the in-process runs, e.g. 0 or 0-3 (default: the first --threads)")
    parser.add_argument("--client_cpus", type=parse_cpus, default=None, help="CPU ids for GuideLLM (default: the CPUs left)")
    parser.add_argument("--no_pin", action="store_true", help="pin nothing: server and client share every CPU")
    parser.add_argument("--kv_cache", choices=KV_CACHES, default=KV_CACHES[0],
                        help="the server's --kv_cache (slots is its default; concat for an A/B)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    layout = cpu_layout(args)

    import torch

    from components.bootstrap.tiny import ensure_tiny_model
    from tests.support import guidellm
    from tests.support.model_server import running_model_server

    if not guidellm.available():
        raise SystemExit(guidellm.MISSING)
    torch.set_num_threads(args.threads)
    levels = [int(c) for c in args.concurrency.split(",")]
    model_dir = args.model_dir or ensure_tiny_model("tiny")
    print(f"model {model_dir}, {args.prompt_tokens}+{args.output_tokens} tokens, torch threads {args.threads}, "
          f"SLO TTFT <= {args.slo_ttft_ms:g} ms and ITL <= {args.slo_itl_ms:g} ms", flush=True)  # fmt: skip
    print(layout["note"], flush=True)
    if layout["server"]:
        os.sched_setaffinity(0, layout["server"])  # this process's in-process runs, and the server it starts
    local_model = InProcess(model_dir, args.prompt_tokens, args.output_tokens, args.rounds)
    runs: dict[str, dict[int, list[dict]]] = {}  # every GuideLLM run, each with the in-process pair it is divided by
    with running_model_server(
        model_dir, model_name="bench",
        args=["--torch_threads", str(args.threads), "--max_batch_size", str(max(levels)),
              "--max_queue", str(4 * max(levels)), "--kv_cache", args.kv_cache],
    ) as server, tempfile.TemporaryDirectory() as work:  # fmt: skip
        for stream in (True, False):
            label = "streamed" if stream else "non-streamed"
            for c in levels:
                spec = guidellm.GuideLLMRun(
                    target=f"{server.url}/openai/v1", model="bench", tokenizer=model_dir, concurrencies=(c,),
                    requests=max(16, args.requests * c), prompt_tokens=args.prompt_tokens,
                    output_tokens=args.output_tokens, stream=stream, request_format="/v1/completions",
                    slo_ttft_ms=args.slo_ttft_ms if stream else None, slo_tpot_ms=args.slo_itl_ms if stream else None,
                    timeout_s=900, cpus=layout["client"],
                    worker_processes=len(layout["client"]) if layout["client"] else None,
                )  # fmt: skip
                for rep in range(args.repeats):
                    before = local_model.measure(c)  # the server idles meanwhile
                    passes0, rows0 = forward_passes(server.url)
                    t0 = time.perf_counter()
                    (bench,) = guidellm.run(spec, Path(work))
                    wall = time.perf_counter() - t0
                    passes1, rows1 = forward_passes(server.url)
                    after = local_model.measure(c)
                    summary = guidellm.summary(bench)
                    # batch occupancy: in-process batch c decodes c rows in every pass
                    summary["forward_passes"] = passes1 - passes0
                    summary["mean_batch"] = (rows1 - rows0) / (passes1 - passes0) if passes1 > passes0 else None
                    summary["in_process"] = pair = mean_of(before, after)
                    summary["ratio"] = {"throughput": summary["output_tok_per_s"] / pair["tok_per_s"],
                                        "latency_p50": summary["e2e_p50_s"] / pair["e2e_p50_s"]}  # fmt: skip
                    runs.setdefault(label, {}).setdefault(c, []).append(summary)
                    print(f"guidellm c{c} {label} ({rep + 1}/{args.repeats}): {wall:.0f} s, "
                          f"{summary['ratio']['throughput']:.2f} of in-process batch {c} (before/after: "
                          f"{before['tok_per_s']:.0f}/{after['tok_per_s']:.0f} tok/s)", flush=True)  # fmt: skip
    # each (mode, concurrency): the run with the median throughput ratio stands for it in the table
    server_rows = {label: [median_run(rs) for rs in by_c.values()] for label, by_c in runs.items()}
    paired = {label: {row["concurrency"]: row["in_process"] for row in rows} for label, rows in server_rows.items()}
    local = {b: mean_of(paired["streamed"][b], paired["non-streamed"][b]) for b in levels}  # shown in the table

    def _batch(mean: float | None) -> str:
        return "-" if mean is None else f"{mean:.1f}"

    def ms(v):
        return f"{v * 1000:8.1f}" if v is not None else "       -"

    print(f"\n{'setup':32} {'TTFT p50':>8} {'TTFT p99':>8} {'ITL p50':>8} {'TPOT p50':>8} {'e2e p50':>8} "
          f"{'e2e p99':>8} {'tok/s':>8} {'tok/s ratio':>11} {'goodput':>8} {'batch':>6}   (times in ms)")  # fmt: skip
    for b in levels:
        r = local[b]
        print(f"{'in-process generate, batch ' + str(b):32} {ms(r['ttft_p50_s'])} {'':8} {'':8} {ms(r['tpot_s'])} "
              f"{ms(r['e2e_p50_s'])} {'':8} {r['tok_per_s']:8.0f}")  # fmt: skip
    ratios: dict[str, dict] = {}
    for label, by_c in runs.items():
        for c, rs in by_c.items():
            ratios.setdefault(label, {})[c] = {
                key: statistics.median(r["ratio"][key] for r in rs) for key in ("throughput", "latency_p50")
            } | {f"{key}_range": spread(r["ratio"][key] for r in rs) for key in ("throughput", "latency_p50")} | {
                "runs": len(rs)
            }  # fmt: skip
    for label, rows in server_rows.items():
        for row in rows:
            c = row["concurrency"]
            done = row["requests"]
            good = f"{row['slo_attainment']:.2f}" if row["slo_attainment"] is not None else "-"
            print(f"{'server c' + str(c) + ', ' + label:32} {ms(row['ttft_p50_s'])} {ms(row['ttft_p99_s'])} "
                  f"{ms(row['itl_p50_s'])} {ms(row['tpot_p50_s'])} {ms(row['e2e_p50_s'])} {ms(row['e2e_p99_s'])} "
                  f"{row['output_tok_per_s']:8.0f} {row['ratio']['throughput']:11.2f} {good:>8} "
                  f"{_batch(row['mean_batch']):>6}"
                  + ("" if done["errored"] == 0 and done["incomplete"] == 0 else f"  ({done})"))  # fmt: skip
    if args.repeats > 1:
        print(f"each server row: the median of {args.repeats} runs by tok/s ratio, each run divided by its own "
              "in-process pair")
    print("batch: mean sequences per forward pass of the server (prefill and decode) during the run; "
          "in-process batch B has B in every pass")
    print()
    def _of(r: dict, key: str) -> str:
        lo, hi = r[f"{key}_range"]
        return f"{r[key]:.2f}" + (f" (median of {r['runs']} runs, range {lo:.2f}-{hi:.2f})" if r["runs"] > 1 else "")

    for label in server_rows:
        r = ratios[label]
        if 16 in r:
            print(f"[{label}] c16 tok/s / in-process b16 = {_of(r[16], 'throughput')} (target >= 0.90)")
        if 1 in r:
            print(f"[{label}] c1 p50 / in-process b1 p50 = {_of(r[1], 'latency_p50')} (target <= 1.10)")
    if args.out:
        args.out.write_text(json.dumps({"in_process": local, "in_process_paired": paired, "server": server_rows, "runs": runs, "ratios": ratios,
                                        "threads": args.threads, "cpu_layout": layout, "args": vars(args) | {"out": str(args.out),
                                        "model_dir": str(model_dir)}}, indent=2, default=str))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
