"""The generation engine alone under closed-loop clients: slot KV cache vs transformers' concatenating cache.

    python benchmarks/engine_batching.py [--concurrency 16] [--rounds 3] [--requests 16] [--cpus 0] [--out results.json]

No HTTP: ``--concurrency`` asyncio clients each submit a request (--prompt_tokens random token ids,
--output_tokens with ``ignore_eos``), wait for its last event and submit the next, --requests times each.
Two arrival shapes:
  * together: every client starts at once, so requests join and leave the batch in waves of
    --concurrency, the shape of in-process ``generate`` at that batch size;
  * staggered: client i starts i/concurrency of a request's duration later, so requests join and leave
    one at a time, the shape independent clients (and GuideLLM) give a server.
Each shape runs with the engine's slot KV cache (``--kv_cache slots``, what the server ships) and with
the concatenating ``DynamicCache`` path (``--kv_cache concat``), interleaved within each round, and
in-process ``generate`` at batch --concurrency runs before and after each round as the baseline
(this machine's speed drifts; a pair a few seconds apart cancels most of it). Reported per shape and
cache: output tokens/s, the ratio to its round's ``generate`` pair (median over rounds), and the
engine thread's CPU microseconds per output token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.serving import InProcess, parse_cpus  # noqa: E402  (after the path: run as a script)


def _thread_cpu_s(native_id: int) -> float:
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def closed_loop(engine, vocab: int, args, stagger_s: float, seed: int) -> dict:
    """Run the clients against a started engine; tokens/s and engine CPU per token."""
    import torch

    from serving.runtime.config import SamplingParams

    params = SamplingParams(max_tokens=args.output_tokens, temperature=0.0, ignore_eos=True).validate()
    gen = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(3, vocab, (args.prompt_tokens,), generator=gen).tolist()
               for _ in range(args.concurrency * args.requests)]  # fmt: skip
    tokens = 0

    async def client(i: int) -> None:
        nonlocal tokens
        await asyncio.sleep(i * stagger_s)
        for k in range(args.requests):
            async for event in engine.submit(prompts[i * args.requests + k], params, stream=False).events():
                if event.finish_reason is not None:
                    tokens += event.completion_tokens

    async def run() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(args.concurrency)))
        return time.perf_counter() - t0

    cpu0 = _thread_cpu_s(engine._thread.native_id)
    wall = asyncio.run(run())
    cpu = _thread_cpu_s(engine._thread.native_id) - cpu0
    return {"tok_per_s": tokens / wall, "engine_cpu_us_per_token": cpu / tokens * 1e6, "tokens": tokens}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=16, help="requests per client in each run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompt_tokens", type=int, default=32)
    parser.add_argument("--output_tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--cpus", type=parse_cpus, default=None, help="CPU ids to pin to, e.g. 0 (default: CPU 0 when there are 2 or more)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    if min(args.concurrency, args.requests, args.rounds, args.prompt_tokens, args.output_tokens, args.threads) < 1:
        parser.error("--concurrency, --requests, --rounds, --prompt_tokens, --output_tokens and --threads must be >= 1")
    allowed = sorted(os.sched_getaffinity(0))
    cpus = set(args.cpus) if args.cpus else ({allowed[0]} if len(allowed) >= 2 else None)
    if cpus and not cpus <= set(allowed):
        parser.error(f"--cpus {sorted(cpus)} is not within the CPUs this process may use ({allowed})")
    if cpus:
        os.sched_setaffinity(0, cpus)  # the engine thread started below inherits it

    import torch

    from components.bootstrap.tiny import ensure_tiny_model
    from serving.runtime.config import EngineConfig
    from serving.runtime.engine import GenerationEngine

    torch.set_num_threads(args.threads)
    model_dir = ensure_tiny_model("tiny")
    baseline = InProcess(model_dir, args.prompt_tokens, args.output_tokens, rounds=3)
    model, tok = baseline.model, baseline.tok
    engines = {}
    for name in ("slots", "concat"):
        config = EngineConfig(max_batch_size=args.concurrency, max_queue=4 * args.concurrency, kv_cache=name)
        engines[name] = GenerationEngine(model, tok, config.validate().resolved(model.config.n_positions))
        engines[name].start()
        engines[name].warmup(list(range(3, 3 + args.prompt_tokens)), args.concurrency)
    # one request's duration at full batch, from generate: the stagger that spreads starts over it
    one_request_s = baseline.measure(args.concurrency)["e2e_p50_s"]
    shapes = {"together": 0.0, "staggered": one_request_s / args.concurrency}
    print(f"tiny model, {args.prompt_tokens}+{args.output_tokens} tokens, {args.concurrency} clients x {args.requests} "
          f"requests, torch threads {args.threads}, CPUs {sorted(cpus) if cpus else 'all'}; "
          f"staggered: starts {shapes['staggered'] * 1000:.0f} ms apart", flush=True)  # fmt: skip
    rows: dict[str, list[dict]] = {}
    for r in range(args.rounds):
        before = baseline.measure(args.concurrency)["tok_per_s"]
        runs = {f"{shape}/{name}": closed_loop(engines[name], len(tok), args, stagger, seed=r)
                for shape, stagger in shapes.items() for name in ("slots", "concat")}  # fmt: skip
        after = baseline.measure(args.concurrency)["tok_per_s"]
        base = (before + after) / 2
        for key, run in runs.items():
            run["ratio_to_generate"] = run["tok_per_s"] / base
            rows.setdefault(key, []).append(run | {"generate_tok_per_s": base})
        print(f"round {r + 1}: generate batch {args.concurrency} {before:.0f}/{after:.0f} tok/s; "
              + "; ".join(f"{k} {v['tok_per_s']:.0f}" for k, v in runs.items()), flush=True)  # fmt: skip
    for engine in engines.values():
        engine.stop()
    print(f"\n{'shape / cache':20} {'tok/s':>8} {'ratio to generate':>18} {'engine CPU us/token':>20}   (medians over rounds)")
    summary = {}
    for key, runs in rows.items():
        med = {m: statistics.median(run[m] for run in runs) for m in ("tok_per_s", "ratio_to_generate", "engine_cpu_us_per_token")}
        summary[key] = med
        print(f"{key:20} {med['tok_per_s']:8.0f} {med['ratio_to_generate']:18.2f} {med['engine_cpu_us_per_token']:20.0f}")
    for shape in shapes:
        paired = [a["tok_per_s"] / b["tok_per_s"] for a, b in zip(rows[f"{shape}/slots"], rows[f"{shape}/concat"])]
        print(f"[{shape}] slots / concat tok/s, median of {len(paired)} paired rounds: {statistics.median(paired):.2f}")
        summary[f"{shape}/slots_over_concat"] = statistics.median(paired)
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "runs": rows, "args": vars(args) | {"out": str(args.out)}},
                                       indent=2, default=str))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
