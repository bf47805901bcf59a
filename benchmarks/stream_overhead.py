"""The server's own cost of streaming: streamed vs non-streamed throughput, interleaved, from a client that costs nothing.

    python benchmarks/stream_overhead.py [--concurrency 16] [--rounds 8] [--requests 4] [--out results.json]

``benchmarks/serving.py`` loads the server with GuideLLM, whose per-chunk work on a small machine can make
the client, not the server, the bottleneck of a streamed run. This benchmark separates the two: one
server (pinned to --server_cpus, default CPU 0, as in serving.py) is loaded by ``--concurrency`` shell
loops of ``curl`` (pinned to the other CPUs) with the same requests (--prompt_tokens token ids,
--output_tokens with ``ignore_eos``), alternating streamed and non-streamed rounds so that the machine's
drift hits both alike. Reported: output tokens/s of each round, and the median over rounds of the paired
ratio streamed / non-streamed (1.0: streaming costs the server nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.serving import parse_cpus  # noqa: E402  (after the path: run as a script)


def curl_load(url: str, body: Path, concurrency: int, requests: int, cpus: set[int] | None) -> tuple[int, int, float]:
    """(requests answered 200, requests sent, wall seconds) for ``concurrency`` loops of ``requests`` curls."""
    loop = (f"for i in $(seq {requests}); do curl -s -N -o /dev/null -w '%{{http_code}}\\n' "
            f"-H 'content-type: application/json' --data-binary @{shlex.quote(str(body))} {shlex.quote(url)}; done")
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["bash", "-c", loop], stdout=subprocess.PIPE, text=True, preexec_fn=pin)
             for _ in range(concurrency)]  # fmt: skip
    codes = [line for p in procs for line in p.communicate()[0].split()]
    return sum(c == "200" for c in codes), len(codes), time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", type=Path, default=None, help="default: the bootstrap tiny model")
    parser.add_argument("--threads", type=int, default=1, help="the server's torch threads")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=4, help="requests per client loop per round")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--prompt_tokens", type=int, default=32)
    parser.add_argument("--output_tokens", type=int, default=64)
    parser.add_argument("--server_cpus", type=parse_cpus, default=(0,),
                        help="CPU ids for the server, e.g. 0 or 0-1 (the client gets the rest)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    from components.bootstrap.tiny import ensure_tiny_model
    from tests.support.model_server import running_model_server

    server_cpus = set(args.server_cpus)
    client_cpus = set(os.sched_getaffinity(0)) - server_cpus or None
    if client_cpus is None:
        print("no CPU left for the client: client and server share the CPUs", flush=True)
    else:
        os.sched_setaffinity(0, server_cpus)  # the server inherits it
    print(f"server on CPUs {sorted(server_cpus)}, curl client on {sorted(client_cpus or server_cpus)}", flush=True)
    model_dir = args.model_dir or ensure_tiny_model("tiny")
    tokens = args.concurrency * args.requests * args.output_tokens
    rows: dict[str, list[float]] = {"streamed": [], "non-streamed": []}
    with running_model_server(
        model_dir, model_name="bench",
        args=["--torch_threads", str(args.threads), "--max_batch_size", str(args.concurrency),
              "--max_queue", str(4 * args.concurrency)],
    ) as server, tempfile.TemporaryDirectory() as work:  # fmt: skip
        url = f"{server.url}/openai/v1/completions"
        bodies = {}
        for label, stream in (("streamed", True), ("non-streamed", False)):
            bodies[label] = Path(work) / f"{label}.json"
            bodies[label].write_text(json.dumps({
                "model": "bench", "prompt": [50 + i % 200 for i in range(args.prompt_tokens)],
                "max_tokens": args.output_tokens, "ignore_eos": True, "temperature": 0, "stream": stream,
            }))  # fmt: skip
        curl_load(url, bodies["streamed"], args.concurrency, 1, client_cpus)  # warm-up
        for r in range(args.rounds):
            for label in (("streamed", "non-streamed") if r % 2 == 0 else ("non-streamed", "streamed")):
                ok, sent, wall = curl_load(url, bodies[label], args.concurrency, args.requests, client_cpus)
                if ok != sent:
                    raise SystemExit(f"{label} round {r + 1}: {sent - ok} of {sent} requests not answered 200")
                rows[label].append(tokens / wall)
            print(f"round {r + 1}: streamed {rows['streamed'][-1]:.0f} tok/s, "
                  f"non-streamed {rows['non-streamed'][-1]:.0f} tok/s", flush=True)  # fmt: skip
    paired = [s / n for s, n in zip(rows["streamed"], rows["non-streamed"])]
    ratio = statistics.median(paired)
    print(f"\nc{args.concurrency}: streamed / non-streamed, median of {args.rounds} paired rounds = {ratio:.3f} "
          f"(range {min(paired):.2f}-{max(paired):.2f}); median tok/s streamed "
          f"{statistics.median(rows['streamed']):.0f}, non-streamed {statistics.median(rows['non-streamed']):.0f}")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps({"tok_per_s": rows, "paired_ratio": paired, "median_ratio": ratio,
                                        "args": vars(args) | {"out": str(args.out), "model_dir": str(model_dir)}},
                                       indent=2, default=str))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
