"""A bounded load generator for canary analysis when no users send traffic.

Flagger pairs canaries with a load tester so that every step has requests to
judge; on one machine (``llmops run``) nobody else queries the endpoint, so the
rollout runs this next to it. It sends golden prompts to the service address
(where the traffic split applies) at a fixed rate from a small thread pool,
stops when told, and never exceeds ``max_requests``.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

log = logging.getLogger(__name__)


class LoadGenerator:
    """Sends completions to ``{url}{openai_base}/completions`` until stopped.

    Args:
        url: service base URL (the router or the InferenceService address).
        model: model name the server answers to.
        prompts: prompts to cycle through.
        rps: target requests per second.
        concurrency: worker threads (bounds requests in flight).
        max_requests: hard cap on requests sent.
        max_tokens: tokens per completion.
        openai_base: path of the runtime's OpenAI routes (vLLM's own server: ``/v1``).
    """

    def __init__(
        self,
        url: str,
        model: str,
        prompts: list[str],
        rps: float = 8.0,
        concurrency: int = 4,
        max_requests: int = 20_000,
        max_tokens: int = 8,
        openai_base: str = "/openai/v1",
    ) -> None:
        if rps <= 0:
            raise ValueError(f"rps must be positive, got {rps}")
        if not prompts:
            raise ValueError("prompts must not be empty")
        self.url = url.rstrip("/") + openai_base + "/completions"
        self.model = model
        self.prompts = prompts
        self.rps = rps
        self.concurrency = concurrency
        self.max_requests = max_requests
        self.max_tokens = max_tokens
        self.status = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _send(self, client: httpx.Client, prompt: str) -> None:
        try:
            r = client.post(
                self.url,
                json={"model": self.model, "prompt": prompt, "max_tokens": self.max_tokens, "temperature": 0},
            )
            self.status[str(r.status_code)] += 1
        except httpx.HTTPError as exc:
            self.status[type(exc).__name__] += 1

    def _loop(self) -> None:
        interval = 1.0 / self.rps
        with httpx.Client(timeout=30.0) as client, ThreadPoolExecutor(self.concurrency) as pool:
            in_flight = threading.BoundedSemaphore(self.concurrency * 2)
            next_at = time.monotonic()
            for n, prompt in enumerate(itertools.cycle(self.prompts)):
                if self._stop.is_set() or n >= self.max_requests:
                    break
                delay = next_at - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                next_at += interval
                if not in_flight.acquire(timeout=1.0):
                    continue  # server saturated: skip rather than queue without bound

                def task(p: str = prompt) -> None:
                    try:
                        self._send(client, p)
                    finally:
                        in_flight.release()

                pool.submit(task)

    def start(self) -> "LoadGenerator":
        self._thread = threading.Thread(target=self._loop, name="llmops-loadgen", daemon=True)
        self._thread.start()
        log.info("load generator: %.1f req/s to %s", self.rps, self.url)
        return self

    def stop(self) -> dict[str, int]:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=35)
        log.info("load generator stopped: %s", dict(self.status))
        return dict(self.status)

    def __enter__(self) -> "LoadGenerator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def probe_split(n: int, weight: int) -> int:
    """Probe requests for the stable arm when the canary gets ``n`` at ``weight`` % of the traffic.

    In the proportion of the traffic split, so probes are the same share of each arm's sample and an
    identical canary still reads as identical: ``n`` to both arms would make a 10 % canary's thin
    sample mostly probes and stable's hardly any, and probes are not shaped like user traffic.
    """
    if n <= 0:
        return 0
    if not 0 < weight < 100:
        return n
    return max(1, round(n * (100 - weight) / weight))


def send_probes(
    canary_url: str, stable_url: str, model: str, prompts: list[str], n: int, stable_n: int | None = None,
    max_tokens: int = 4, timeout_s: float = 30.0, openai_base: str = "/openai/v1",
) -> int:
    """Send ``n`` golden prompts to the canary's own address and ``stable_n`` (default ``n``) to stable's.

    Called by the rollout controller when the sequential judge finds real
    traffic too thin for a step (``AnalysisPolicy.probe_budget`` bounds ``n``),
    with ``stable_n`` from :func:`probe_split`; both arms cycle through the same prompts.

    Returns:
        Requests answered, both arms together (any HTTP status counts; a transport error does not).
    """
    stable_n = n if stable_n is None else stable_n
    if (n <= 0 and stable_n <= 0) or not prompts:
        return 0
    answered = 0
    with httpx.Client(timeout=timeout_s) as client:
        for url, count in ((canary_url, n), (stable_url, stable_n)):
            for prompt in itertools.islice(itertools.cycle(prompts), max(0, count)):
                try:
                    client.post(
                        url.rstrip("/") + openai_base + "/completions",
                        json={"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0},
                    )
                    answered += 1
                except httpx.HTTPError as exc:
                    log.debug("probe to %s failed: %s", url, exc)
    return answered
