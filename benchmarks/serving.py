"""Serving benchmark: in-process ``model.generate`` vs our model server, same model, one run.

    python benchmarks/serving.py [--model_dir DIR] [--max_tokens 64] [--threads 1]

Measures, side by side:
  * in-process ``model.generate`` (greedy, eos suppressed via min_new_tokens) at batch 1 and batch 16;
  * ``python -m serving`` on loopback at concurrency 1, 4 and 16, each both streamed (SSE, gives
    TTFT) and non-streamed, with ``ignore_eos`` so every request generates exactly --max_tokens.
Slices of each setup are interleaved in time so the drifting load of a shared CPU hits all alike.
Reports requests/s, generated tokens/s, p50/p95 latency and TTFT, and the two target ratios:
  * server tokens/s at concurrency 16 >= 80% of in-process batch-16 tokens/s;
  * server p50 latency at concurrency 1 within 15% of in-process batch-1 latency.
Numbers on a shared CPU are noisy: compare ratios from one run, not absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def _row(name, n_req, tokens, wall, latencies, ttfts) -> dict:
    return {
        "setup": name,
        "requests": n_req,
        "req_per_s": n_req / wall,
        "tok_per_s": tokens / wall,
        "p50_s": statistics.median(latencies),
        "p95_s": _pct(latencies, 0.95),
        "ttft_p50_s": statistics.median(ttfts) if ttfts else None,
    }


class InProcess:
    """``model.generate`` in this process (greedy, exactly max_tokens tokens via min_new_tokens)."""

    def __init__(self, model_dir: Path, max_tokens: int):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.tok.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        self.gen = dict(
            max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False, pad_token_id=self.tok.pad_token_id
        )
        self.latencies: dict[int, list[float]] = {}
        self.tokens: dict[int, int] = {}
        self.wall: dict[int, float] = {}

    def run(self, prompts: list[str], batch: int, rounds: int, offset: int = 0) -> None:
        import torch

        with torch.no_grad():
            for r in range(rounds):
                chunk = [prompts[(offset + r * batch + i) % len(prompts)] for i in range(batch)]
                inputs = self.tok(chunk, return_tensors="pt", padding=True)
                t0 = time.perf_counter()
                out = self.model.generate(**inputs, **self.gen)
                elapsed = time.perf_counter() - t0
                self.latencies.setdefault(batch, []).extend([elapsed] * batch)
                self.tokens[batch] = self.tokens.get(batch, 0) + (out.shape[1] - inputs["input_ids"].shape[1]) * batch
                self.wall[batch] = self.wall.get(batch, 0.0) + elapsed

    def row(self, batch: int) -> dict:
        n = len(self.latencies[batch])
        return _row(f"in-process generate, batch {batch}", n, self.tokens[batch], self.wall[batch],
                    self.latencies[batch], [])  # fmt: skip


class ServerLoad:
    """Accumulates server measurements over several interleaved slices."""

    def __init__(self):
        self.latencies: dict[int, list[float]] = {}
        self.ttfts: dict[int, list[float]] = {}
        self.tokens: dict[int, int] = {}
        self.wall: dict[int, float] = {}

    def row(self, key: int) -> dict:
        name = f"server, concurrency {abs(key)}" + (", streamed" if key > 0 else ", non-streamed")
        return _row(name, len(self.latencies[key]), self.tokens[key], self.wall[key], self.latencies[key],
                    self.ttfts[key])  # fmt: skip


async def _server_slice(
    url, model, prompts, max_tokens, conc, n_req, acc: ServerLoad, warm: bool = False, stream: bool = True
) -> None:
    """``n_req`` completions from ``conc`` concurrent clients; results added to ``acc``."""
    import httpx

    latencies, ttfts, tokens = [], [], [0]
    counter = iter(range(n_req))

    async def worker(client):
        for i in counter:
            body = {"model": model, "prompt": prompts[i % len(prompts)], "max_tokens": max_tokens,
                    "temperature": 0, "ignore_eos": True}  # fmt: skip
            t0 = time.perf_counter()
            first = None
            if not stream:
                resp = await client.post("/openai/v1/completions", json=body)
                resp.raise_for_status()
                tokens[0] += resp.json()["usage"]["completion_tokens"]
                latencies.append(time.perf_counter() - t0)
                continue
            body.update(stream=True, stream_options={"include_usage": True})
            async with client.stream("POST", "/openai/v1/completions", json=body) as resp:
                resp.raise_for_status()
                async for line in resp.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    data = json.loads(line[6:])
                    if first is None and data["choices"] and data["choices"][0]["text"]:
                        first = time.perf_counter() - t0
                    if data.get("usage"):
                        tokens[0] += data["usage"]["completion_tokens"]
            latencies.append(time.perf_counter() - t0)
            ttfts.append(first if first is not None else latencies[-1])

    key = conc if stream else -conc  # negative keys: non-streamed slices
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=conc)) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(conc)))
        wall = time.perf_counter() - start
    if not warm:
        acc.latencies.setdefault(key, []).extend(latencies)
        acc.ttfts.setdefault(key, []).extend(ttfts)
        acc.tokens[key] = acc.tokens.get(key, 0) + tokens[0]
        acc.wall[key] = acc.wall.get(key, 0.0) + wall


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", type=Path, default=None, help="default: the bootstrap tiny model")
    parser.add_argument("--max_tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, in-process and in the server")
    parser.add_argument("--rounds", type=int, default=4, help="batches per in-process setup / requests per client")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)

    import torch

    from components.bootstrap.dataset import generate
    from components.bootstrap.tiny import ensure_tiny_model
    from tests.support.model_server import running_model_server

    torch.set_num_threads(args.threads)
    model_dir = args.model_dir or ensure_tiny_model("tiny")
    prompts = [ex.prompt for ex in generate("test", 64, 7)]
    print(f"model {model_dir}, max_tokens {args.max_tokens}, torch threads {args.threads}", flush=True)
    local = InProcess(model_dir, args.max_tokens)
    load = ServerLoad()
    with running_model_server(
        model_dir, model_name="bench", args=["--torch_threads", str(args.threads), "--max_batch_size", "16"]
    ) as server:

        def serve(conc: int, n_req: int, warm: bool = False, stream: bool = True) -> None:
            asyncio.run(
                _server_slice(server.url, "bench", prompts, args.max_tokens, conc, n_req, load, warm, stream)
            )

        local.run(prompts, 1, 1), local.run(prompts, 16, 1)  # warm-up both sides
        serve(1, 2, warm=True), serve(16, 16, warm=True)
        local.latencies.clear(), local.tokens.clear(), local.wall.clear()
        # Interleave in-process and server slices so drifting load on a shared CPU hits both alike.
        for r in range(args.rounds):
            local.run(prompts, 1, 4, offset=r * 4)
            serve(1, 4)
            serve(1, 4, stream=False)
            local.run(prompts, 16, 1, offset=r * 16)
            serve(16, 16)
            serve(16, 16, stream=False)
            serve(4, 8)
            serve(4, 8, stream=False)
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    rows = [local.row(1), local.row(16)] + [load.row(k) for k in (1, 4, 16, -1, -4, -16)]
    print(f"\n{'setup':44} {'req/s':>7} {'tok/s':>8} {'p50 s':>7} {'p95 s':>7} {'TTFT p50':>9}")
    for r in rows:
        ttft = f"{r['ttft_p50_s']:.3f}" if r["ttft_p50_s"] is not None else "-"
        print(f"{r['setup']:44} {r['req_per_s']:7.2f} {r['tok_per_s']:8.1f} {r['p50_s']:7.3f} {r['p95_s']:7.3f} {ttft:>9}")
    b1, b16 = rows[0], rows[1]
    ratios = {}
    for label, c1, c16 in (("streamed", rows[2], rows[4]), ("non-streamed", rows[5], rows[7])):
        ratios[label] = {"throughput": c16["tok_per_s"] / b16["tok_per_s"], "latency": c1["p50_s"] / b1["p50_s"]}
        print(f"\n[{label}] server c16 tok/s / in-process b16 tok/s = {ratios[label]['throughput']:.2f}  (target >= 0.80)")
        print(f"[{label}] server c1 p50 / in-process b1 p50       = {ratios[label]['latency']:.2f}  (target <= 1.15)")
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "ratios": ratios, "threads": args.threads}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
