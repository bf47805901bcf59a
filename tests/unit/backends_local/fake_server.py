"""TEST-ONLY stand-in for ``python -m serving`` used by the local backend's unit tests.

It speaks just enough of the model server's HTTP surface for reconcile logic:
``/v2/health/ready``, ``/openai/v1/completions`` (answers its
``--model_version``, optionally as SSE) and ``/upload`` (counts the body's bytes). Exits 1 with a message when
``--model_dir`` has no ``config.json``, like a real server failing to load.
Integration tests use the real server instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model_dir", required=True)
    p.add_argument("--model_name", required=True)
    p.add_argument("--model_version", required=True)
    p.add_argument("--http_port", type=int, required=True)
    p.add_argument("--startup_delay_s", type=float, default=0.0)
    args, _ = p.parse_known_args()
    config = Path(args.model_dir) / "config.json"
    try:
        json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        print(f"cannot load model from {args.model_dir}: {exc}", file=sys.stderr)
        return 1
    time.sleep(args.startup_delay_s)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):  # keep test logs quiet
            pass

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/v2/health/ready":
                self._send(200, {"ready": True})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self):
            if self.path == "/upload":  # counts a (chunked) body without keeping it: the router's streaming test
                total = 0
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                        while size:
                            size -= len(chunk := self.rfile.read(min(size, 1 << 16)))
                            total += len(chunk)
                        self.rfile.readline()
                    self.rfile.readline()
                else:
                    total = len(self.rfile.read(int(self.headers.get("content-length") or 0)))
                self._send(200, {"bytes": total, "model_version": args.model_version})
                return
            n = int(self.headers.get("content-length") or 0)
            req = json.loads(self.rfile.read(n) or b"{}")
            if self.path != "/openai/v1/completions":
                self._send(404, {"error": "not found"})
                return
            if req.get("stream"):
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for i in range(3):
                    event = f"data: {json.dumps({'i': i, 'model_version': args.model_version})}\n\n".encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                    self.wfile.flush()
                    time.sleep(0.3)
                self.wfile.write(b"0\r\n\r\n")
                return
            self._send(200, {"model": args.model_name, "model_version": args.model_version, "path": self.path})

    ThreadingHTTPServer(("127.0.0.1", args.http_port), Handler).serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
