"""Image build + push throughput, side by side: daemonless OCI builder vs ``docker build``.

Generates a model folder of random data (a few large "weights" files and some
small ones) in a temp dir, starts a local docker-registry on loopback, and
measures for the oci builder:

* cold build+push (every blob sent) at gzip levels 1 and 6 and uncompressed;
* a rebuild of the same folder (same digest, nothing sent);
* a rebuild after one small file changed (only its layer sent).

``docker build`` + push of the equivalent Dockerfile runs when a daemon answers;
otherwise it prints "skipped: no daemon". Run::

    python benchmarks/image_build.py --size-mb 300
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.build_image import BuilderUnavailable, build_image  # noqa: E402
from components.build_image.builders.docker import DockerBuilder  # noqa: E402
from components.build_image.dockerfile import write_build_context  # noqa: E402
from components.build_image.spec import BuildSpec  # noqa: E402
from tests.support.oci_registry import run_registry  # noqa: E402


def make_model(root: Path, size_mb: int, big_files: int = 4) -> Path:
    root.mkdir(parents=True)
    per = (size_mb << 20) // big_files
    for i in range(big_files):
        with open(root / f"model-{i:05d}-of-{big_files:05d}.safetensors", "wb") as fh:
            left = per
            while left:
                n = min(left, 8 << 20)
                fh.write(os.urandom(n))
                left -= n
    (root / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 12}))
    (root / "tokenizer.json").write_text(json.dumps({"vocab": {f"t{i}": i for i in range(5000)}}))
    (root / "generation_config.json").write_text("{}")
    return root


def row(name: str, result, total_bytes: int) -> dict:
    mbps = total_bytes / 1e6 / result.wall_s
    print(f"{name:34} {result.wall_s:7.2f}s {mbps:8.1f} MB/s  sent {result.blobs_uploaded:2d} blobs "
          f"{result.bytes_uploaded / 1e6:8.1f} MB  skipped {result.blobs_skipped:2d}")
    return {"case": name, "wall_s": round(result.wall_s, 3), "mb_per_s": round(mbps, 1),
            "blobs_uploaded": result.blobs_uploaded, "bytes_uploaded": result.bytes_uploaded,
            "blobs_skipped": result.blobs_skipped, "digest": result.digest}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=300, help="model folder size (default 300 MB)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="llmops-bench-") as tmp:
        tmp = Path(tmp)
        model = make_model(tmp / "model", args.size_mb)
        total = sum(p.stat().st_size for p in model.rglob("*") if p.is_file())
        print(f"model folder: {total / 1e6:.1f} MB in {len(list(model.iterdir()))} files; registry on loopback")
        with run_registry(tmp / "registry") as reg:
            for level, compress, name in ((1, True, "gzip-1"), (6, True, "gzip-6"), (6, False, "uncompressed")):
                res = build_image(model, f"{reg.host}/bench/{name}:v1", base=None, insecure=True,
                                  compress=compress, compression_level=level)
                rows.append(row(f"oci cold build+push ({name})", res, total))
            again = build_image(model, f"{reg.host}/bench/gzip-1:v1", base=None, insecure=True,
                                compression_level=1)
            rows.append(row("oci rebuild, unchanged (gzip-1)", again, total))
            print(f"{'':34} same digest: {again.digest == rows[0]['digest']}")
            (model / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 13}))
            delta = build_image(model, f"{reg.host}/bench/gzip-1:v2", base=None, insecure=True,
                                compression_level=1)
            rows.append(row("oci rebuild, config.json changed", delta, total))
            to_layout = build_image(model, f"oci-layout:{tmp / 'layout'}:v1", base=None, compression_level=1)
            rows.append(row("oci to oci-layout folder (gzip-1)", to_layout, total))
            try:
                client = DockerBuilder().client()
            except BuilderUnavailable:
                print(f"{'docker build + push':34} skipped: no daemon")
                rows.append({"case": "docker build + push", "skipped": "no daemon"})
            else:
                spec = BuildSpec(source_dir=model, target=f"{reg.host}/bench/docker:v1", base=None)
                ctx = write_build_context(spec, tmp / "ctx")
                t0 = time.perf_counter()
                client.images.build(path=str(ctx), tag=f"{reg.host}/bench/docker:v1", rm=True)
                for _ in client.images.push(f"{reg.host}/bench/docker", tag="v1", stream=True, decode=True):
                    pass
                dt = time.perf_counter() - t0
                print(f"{'docker build + push':34} {dt:7.2f}s {total / 1e6 / dt:8.1f} MB/s")
                rows.append({"case": "docker build + push", "wall_s": round(dt, 3),
                             "mb_per_s": round(total / 1e6 / dt, 1)})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
