"""Continuous-batching generation engine: one worker thread owns the model.

Requests wait in a bounded queue (``max_queue``; beyond it :class:`OverloadedError`).
The worker admits waiting requests into the running batch at every decode step, up to
``max_batch_size`` rows: newcomers are prefilled together (left padding, attention mask,
explicit position ids), their keys and values are copied into free slots of the batch's
KV cache (:mod:`serving.runtime.kv_slots`: preallocated storage, right-aligned rows, no
per-step concatenation), and all rows then decode one token per forward pass. Finished
rows leave the batch at once (the last row takes the freed slot); cache columns that no
row attends to any more are trimmed. Models whose cache has sliding-window or other
non-plain layers keep transformers' concatenating ``DynamicCache``: the running cache is
left-padded and concatenated with each newcomer's, and ``index_select``-ed on departures.

Greedy output of a prompt equals its unbatched output: masked (padded) cache columns get
exactly zero attention weight, so only the float rounding of differently shaped matmuls
could differ. Measured on the bootstrap tiny model (float32, CPU): 0 mismatches in 48
prompts x 24 tokens (unit test) and 60 prompts x 40 tokens (ad hoc), against a
one-prompt, no-cache reference. Other models or bf16 may show rare argmax flips.

Errors raised here (see :mod:`serving.errors`): ``OverloadedError`` and
``ShuttingDownError`` from :meth:`GenerationEngine.submit`. Failures inside the worker
are reported on the request's event stream (``finish_reason="error"``), never raised in
the worker, which keeps serving.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from serving.errors import OverloadedError, ShuttingDownError
from serving.runtime.config import EngineConfig, SamplingParams
from serving.runtime.detokenize import IncrementalDecoder, decoder_kind, make_decoder
from serving.runtime.kv_slots import SlotKVCache, supported as slots_hold
from serving.runtime.sampling import choose_tokens, find_stop_match, holdback

logger = logging.getLogger(__name__)

FINISH_STOP = "stop"  # eos or a stop sequence
FINISH_LENGTH = "length"  # max_tokens or the context limit
FINISH_TIMEOUT = "timeout"  # request_timeout_s passed
FINISH_CANCELLED = "cancelled"  # the client went away
FINISH_ERROR = "error"  # the forward pass failed


@dataclass(frozen=True)
class GenerationEvent:
    """One step of a request's output stream."""

    text: str  # text generated since the previous event
    finish_reason: str | None  # None while generating; one of the FINISH_* values at the end
    prompt_tokens: int  # tokens in the prompt
    completion_tokens: int  # tokens generated so far
    error: str | None = None  # set when finish_reason is "error"


class RequestHandle:
    """The caller's side of a submitted request: an async stream of :class:`GenerationEvent`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stream: bool = True):
        self._loop = loop
        self._queue: asyncio.Queue[GenerationEvent] = asyncio.Queue()
        self.cancelled = False
        self.stream = stream  # False: only the finishing event (with all the text) is delivered

    def cancel(self) -> None:
        """Ask the worker to drop this request at its next step."""
        self.cancelled = True

    async def next_event(self) -> GenerationEvent:
        """Wait for the next event."""
        return await self._queue.get()

    async def next_events(self) -> GenerationEvent:
        """Wait for the next event, merged with any others already waiting (fewer, larger stream chunks)."""
        event = await self._queue.get()
        while event.finish_reason is None and not self._queue.empty():
            nxt = self._queue.get_nowait()
            event = GenerationEvent(
                event.text + nxt.text, nxt.finish_reason, nxt.prompt_tokens, nxt.completion_tokens, nxt.error
            )
        return event

    async def events(self) -> AsyncIterator[GenerationEvent]:
        """Yield events until (and including) the finishing one."""
        while True:
            event = await self._queue.get()
            yield event
            if event.finish_reason is not None:
                return



def _run_catching(coro_fn, box: list) -> None:
    """Run ``coro_fn()`` on a new event loop; an exception goes into ``box``."""
    try:
        asyncio.run(coro_fn())
    except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
        box.append(exc)


def _deliver(items: list[tuple[RequestHandle, GenerationEvent]]) -> None:
    """Runs on the event loop: hand one step's events to their requests."""
    for handle, event in items:
        handle._queue.put_nowait(event)


@dataclass
class _Sequence:
    handle: RequestHandle
    prompt_ids: list[int]
    params: SamplingParams
    generator: torch.Generator
    deadline: float
    submitted_at: float
    generated: list[int] = field(default_factory=list)
    pos: int = 0  # tokens of this row already in the KV cache
    emitted: int = 0  # characters of text already sent
    finished: bool = False
    decoder: IncrementalDecoder | None = None  # set when text is needed before the end (stream or stop)
    text: str = ""  # text decoded so far (incrementally)
    scanned: int = 0  # characters of ``text`` already searched for stop sequences
    observed: bool = True  # its time to first token goes to the observer (not for rollout probes)


class EngineObserver:
    """Receives the engine's measurements; the default does nothing (see ``RuntimeMetrics``)."""

    def queue_depth(self, depth: int) -> None:  # noqa: D102
        pass

    def batch_size(self, rows: int) -> None:  # noqa: D102
        pass

    def first_token(self, seconds: float) -> None:  # noqa: D102
        pass

    def prompt_tokens(self, n: int) -> None:  # noqa: D102
        pass

    def generated_tokens(self, n: int) -> None:  # noqa: D102
        pass


class GenerationEngine:
    """Batches generation requests over one causal LM in a single worker thread.

    Args:
        model: a loaded ``PreTrainedModel`` (causal LM) in eval mode.
        tokenizer: its tokenizer (used to decode generated text).
        config: batching and limits; token limits must be resolved (see ``EngineConfig.resolved``).
        observer: receives metrics.
        clock: monotonic clock in seconds (injectable for tests).
    """

    def __init__(
        self,
        model,
        tokenizer,
        config: EngineConfig,
        observer: EngineObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if config.max_total_tokens is None or config.max_prompt_tokens is None:
            raise ValueError("EngineConfig token limits must be resolved: call config.resolved(model_context)")
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.observer = observer or EngineObserver()
        self.clock = clock
        self.eos_token_id = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else (self.eos_token_id or 0)
        self._pending: deque[_Sequence] = deque()
        # Events of the current step, per event loop: one wake-up per loop and step, not per token.
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[RequestHandle, GenerationEvent]]] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._device = next(model.parameters()).device
        accepted = inspect.signature(model.forward).parameters
        self._logits_to_keep = "logits_to_keep" in accepted
        # transformers 5.x renamed ``past_key_values`` to ``cache``; accept either.
        self._cache_kw = "cache" if "cache" in accepted else "past_key_values"
        self._kv_slots = config.kv_cache == "slots"  # "concat": transformers' DynamicCache for every model
        self._decoder_kind = decoder_kind(tokenizer)
        logger.info("incremental detokenizer: %s", self._decoder_kind.value)

    # ---- caller side (event loop thread) -------------------------------------------------

    def start(self) -> None:
        """Start the worker thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="llmops-generation", daemon=True)
            self._thread.start()

    @property
    def alive(self) -> bool:
        """True while the worker thread runs and accepts work."""
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch slot."""
        return len(self._pending)

    def submit(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        loop: asyncio.AbstractEventLoop | None = None,
        stream: bool = True,
        observed: bool = True,
    ) -> RequestHandle:
        """Queue a request; its output arrives on the returned handle.

        Args:
            prompt_ids: the tokenized prompt (validated against the limits by the caller).
            params: validated sampling parameters.
            loop: the event loop that consumes the events (default: the running loop).
            stream: deliver text as it is generated; False delivers one finishing event
                (fewer event-loop wake-ups for non-streaming requests).
            observed: False keeps its time to first token out of the observer (a rollout probe).

        Raises:
            OverloadedError: the waiting queue holds ``max_queue`` requests.
            ShuttingDownError: the engine is stopping.
        """
        handle = RequestHandle(loop or asyncio.get_running_loop(), stream)
        gen = torch.Generator()
        if params.seed is not None:
            gen.manual_seed(params.seed)
        else:
            gen.seed()
        now = self.clock()
        seq = _Sequence(
            handle=handle,
            prompt_ids=list(prompt_ids),
            params=params,
            generator=gen,
            deadline=now + self.config.request_timeout_s,
            submitted_at=now,
            observed=observed,
        )
        with self._cond:
            if self._stopping:
                raise ShuttingDownError("the server is shutting down; retry on another replica", code="shutting_down")
            if len(self._pending) >= self.config.max_queue:
                raise OverloadedError(
                    f"the server is overloaded: {len(self._pending)} requests are already waiting "
                    f"(--max_queue {self.config.max_queue}); retry after the Retry-After delay",
                    code="queue_full",
                )
            self._pending.append(seq)
            self.observer.queue_depth(len(self._pending))
            self._cond.notify()
        return handle

    def warmup(self, prompt_ids: Sequence[int], requests: int, max_tokens: int = 8, timeout_s: float = 300.0) -> float:
        """Generate ``requests`` throwaway completions before the server reports ready; return the seconds taken.

        A fresh process runs its first forward passes several times slower than later ones (allocator
        growth, kernel selection per shape), so without this the first users, and a canary's first
        measured requests, pay for it. One batch of ``requests`` goes first (batched shapes), then one
        request alone (the single-row decode path). The worker must be running. Metrics see none of it:
        the observer is swapped for a silent one while it runs. The requests run on a private event
        loop in a helper thread, so this works whether or not the caller is inside a loop.

        Raises:
            RuntimeError: a warmup generation failed or did not finish within ``timeout_s``.
        """
        requests = min(requests, self.config.max_queue)  # a small --max_queue must not refuse its own warmup
        if requests <= 0:
            return 0.0
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True).validate()
        failures: list[str] = []

        async def one() -> None:
            async for event in self.submit(prompt_ids, params, stream=False).events():
                if event.finish_reason not in (None, FINISH_STOP, FINISH_LENGTH):
                    failures.append(event.error or event.finish_reason)

        async def run() -> None:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(one() for _ in range(requests)))
                await one()

        observer, self.observer = self.observer, EngineObserver()
        started = time.monotonic()
        try:
            box: list[BaseException] = []
            helper = threading.Thread(target=lambda: _run_catching(run, box), name="llmops-warmup", daemon=True)
            helper.start()
            helper.join()
        finally:
            self.observer = observer
        if box or failures:
            cause = repr(box[0]) if box and not isinstance(box[0], TimeoutError) else (
                f"did not finish within {timeout_s:g}s" if box else "; ".join(failures))
            raise RuntimeError(f"warmup generation failed: {cause}")
        return time.monotonic() - started

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new work, finish what is queued and running, then end the worker.

        Args:
            timeout: seconds to wait for the worker; None waits until it is done.
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # ---- worker side ---------------------------------------------------------------------

    def _take(self, room: int, block: bool) -> list[_Sequence] | None:
        """Take up to ``room`` waiting requests; None means: stop, nothing left to do."""
        with self._cond:
            if block:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending:
                    return None
                # Idle engine: give requests that arrive together a moment to join one batch.
                deadline = self.clock() + self.config.max_batch_wait_ms / 1000.0
                while len(self._pending) < room and not self._stopping:
                    remaining = deadline - self.clock()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            taken = []
            while self._pending and len(taken) < room:
                taken.append(self._pending.popleft())
            if taken:
                self.observer.queue_depth(len(self._pending))
            return taken

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        active: list[_Sequence] = []
        cache = None  # the concatenating path's DynamicCache and mask (models the slot cache cannot hold)
        mask: torch.Tensor | None = None
        slots = SlotKVCache(self.config.max_batch_size)  # holds no storage until a batch starts in it
        use_slots = False  # chosen per batch, when it starts
        while True:
            newcomers = self._take(self.config.max_batch_size - len(active), block=not active)
            if newcomers is None:
                break
            try:
                newcomers = [s for s in newcomers if not self._expired(s)]
                if newcomers:
                    try:
                        new_cache, new_mask, logits = self._prefill(newcomers)
                    except Exception as exc:  # nothing running was touched: fail the newcomers only
                        logger.exception("prefill failed; failing its %d requests", len(newcomers))
                        self._fail(newcomers, exc)
                        newcomers = []
                if newcomers:
                    self._accept(newcomers, logits)
                    if not active:
                        use_slots = self._kv_slots and slots_hold(new_cache)
                    if use_slots:
                        slots.admit(new_cache, new_mask)
                        active = active + newcomers
                        active = slots.remove([s.finished for s in active], active)
                    else:
                        cache, mask = self._merge(cache, mask, new_cache, new_mask)
                        active = active + newcomers
                        active, cache, mask = self._drop_finished(active, cache, mask)
                    new_cache = new_mask = logits = None  # copied into the batch: let the prefill's go
                if active:
                    if use_slots:
                        mask, cache = slots.begin_step(1), slots.cache
                    else:
                        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
                    ids = torch.tensor([[s.generated[-1]] for s in active], device=self._device)
                    positions = torch.tensor([[s.pos] for s in active], device=self._device)
                    out = self.model(
                        input_ids=ids,
                        attention_mask=mask,
                        position_ids=positions,
                        use_cache=True,
                        **{self._cache_kw: cache},
                    )
                    if use_slots:
                        slots.end_step()
                    else:
                        cache = self._cache_of(out)
                    self.observer.batch_size(len(active))
                    for s in active:
                        s.pos += 1
                    self._accept(active, out.logits[:, -1, :])
                    if use_slots:
                        active = slots.remove([s.finished for s in active], active)
                    else:
                        active, cache, mask = self._drop_finished(active, cache, mask)
                    out = None
                if not active:  # an idle engine holds no KV memory: drop every reference to the batch's
                    cache = mask = None
            except Exception as exc:  # keep serving: fail this batch, not the process
                logger.exception("generation step failed; failing %d requests", len(active) + len(newcomers or []))
                self._fail(active + (newcomers or []), exc)
                active, cache, mask, out, new_cache, new_mask, logits = [], None, None, None, None, None, None
                slots.reset()
            self._flush()
        self._flush()
        logger.info("generation worker stopped")

    def _fail(self, seqs: list[_Sequence], exc: Exception) -> None:
        for s in seqs:
            if not s.finished:
                self._finish(s, FINISH_ERROR, "", error=f"{type(exc).__name__}: {exc}")

    def _emit(self, handle: RequestHandle, event: GenerationEvent) -> None:
        self._outbox.setdefault(handle._loop, []).append((handle, event))

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, {}
        for loop, items in outbox.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # event loop closed: nobody is listening any more
                for handle, _ in items:
                    handle.cancelled = True

    def _expired(self, s: _Sequence) -> bool:
        if s.handle.cancelled:
            self._finish(s, FINISH_CANCELLED, "")
            return True
        if self.clock() > s.deadline:
            self._finish(s, FINISH_TIMEOUT, "")
            return True
        return False

    def _prefill(self, seqs: list[_Sequence]):
        width = max(len(s.prompt_ids) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            n = len(s.prompt_ids)
            ids[i, width - n :] = torch.tensor(s.prompt_ids, dtype=torch.long)
            mask[i, width - n :] = 1
            s.pos = n
            self.observer.prompt_tokens(n)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        kwargs = {"logits_to_keep": 1} if self._logits_to_keep else {}
        out = self.model(
            input_ids=ids.to(self._device),
            attention_mask=mask.to(self._device),
            position_ids=positions.to(self._device),
            use_cache=True,
            **kwargs,
        )
        self.observer.batch_size(len(seqs))
        return self._cache_of(out), mask.to(self._device), out.logits[:, -1, :]

    def _cache_of(self, out):
        cache = getattr(out, "cache", None)
        return cache if cache is not None else out.past_key_values

    @staticmethod
    def _layers(cache):
        layers = getattr(cache, "layers", None)
        if layers is None or any(not hasattr(layer, "keys") for layer in layers):
            raise TypeError(f"cannot batch a {type(cache).__name__}: the runtime needs a DynamicCache")
        return layers

    def _merge(self, cache, mask, new_cache, new_mask):
        """Concatenate two batches' KV caches along the batch axis, left-padding the shorter one."""
        if cache is None:
            return new_cache, new_mask
        t_old, t_new = mask.shape[1], new_mask.shape[1]
        width = max(t_old, t_new)
        old_layers, new_layers = self._layers(cache), self._layers(new_cache)
        for old, new in zip(old_layers, new_layers):
            for attr in ("keys", "values"):
                a = F.pad(getattr(old, attr), (0, 0, width - t_old, 0))
                b = F.pad(getattr(new, attr), (0, 0, width - t_new, 0))
                setattr(old, attr, torch.cat([a, b], dim=0))
        mask = torch.cat([F.pad(mask, (width - t_old, 0)), F.pad(new_mask, (width - t_new, 0))], dim=0)
        return cache, mask

    def _drop_finished(self, active, cache, mask):
        keep = [i for i, s in enumerate(active) if not s.finished]
        if not keep:
            return [], None, None
        if len(keep) < len(active):
            index = torch.tensor(keep, device=mask.device)
            for layer in self._layers(cache):
                layer.keys = layer.keys.index_select(0, index)
                layer.values = layer.values.index_select(0, index)
            mask = mask.index_select(0, index)
            active = [active[i] for i in keep]
        # Trim cache columns that no remaining row attends to (left padding of departed rows).
        used = mask.sum(dim=0).nonzero()
        first = int(used[0]) if used.numel() else 0
        if first > 0:
            for layer in self._layers(cache):
                layer.keys = layer.keys[..., first:, :]
                layer.values = layer.values[..., first:, :]
            mask = mask[:, first:]
        return active, cache, mask

    def _accept(self, seqs: list[_Sequence], logits: torch.Tensor) -> None:
        """Choose each row's next token, stream its text, and mark rows that are done."""
        need_history = any(s.params.repetition_penalty != 1.0 for s in seqs)
        tokens = choose_tokens(
            logits,
            [s.params for s in seqs],
            [s.generator for s in seqs],
            self.eos_token_id,
            histories=[s.prompt_ids + s.generated for s in seqs] if need_history else None,
            generated=[len(s.generated) for s in seqs],
        )
        now = self.clock()
        for s, tok in zip(seqs, tokens):
            if s.finished:
                continue
            if s.handle.cancelled:
                self._finish(s, FINISH_CANCELLED, "")
                continue
            if not s.generated and s.observed:
                self.observer.first_token(now - s.submitted_at)
            s.generated.append(tok)
            finish = None
            keep_token = True  # does this token's text belong to the output?
            if tok == self.eos_token_id and not s.params.ignore_eos:
                finish, keep_token = FINISH_STOP, False
            elif tok in s.params.stop_token_ids:
                finish, keep_token = FINISH_STOP, s.params.include_stop_str_in_output
            if finish is None and (
                len(s.generated) >= s.params.max_tokens or s.pos + 1 >= self.config.max_total_tokens
            ):
                finish = FINISH_LENGTH
            if finish is None and now > s.deadline:
                finish = FINISH_TIMEOUT
            incremental = s.handle.stream or bool(s.params.stop)
            if not incremental:
                if finish is not None:  # nobody reads partial text: decode once, at the end
                    self._finish(s, finish, self._final_text(s, keep_token))
                continue
            if s.decoder is None:
                s.decoder = make_decoder(self.tokenizer, self._decoder_kind)
            if keep_token:
                s.text += s.decoder.step(tok)
            if s.params.stop and finish != FINISH_TIMEOUT:
                cut = self._stop_cut(s)
                if cut is not None:
                    self._finish(s, FINISH_STOP, s.text[:cut])
                    continue
            if finish is not None:
                text = self._final_text(s, keep_token)
                if s.params.stop and finish != FINISH_TIMEOUT:  # a stop completed by held-back bytes
                    cut = self._stop_cut(s, text)
                    if cut is not None:
                        text, finish = text[:cut], FINISH_STOP
                self._finish(s, finish, text)
                continue
            if not s.handle.stream:
                continue
            safe = len(s.text)
            if s.params.stop:
                safe -= holdback(s.text[-max(map(len, s.params.stop)) :], s.params.stop)
            if safe > s.emitted:
                delta, s.emitted = s.text[s.emitted : safe], safe
                self._emit(s.handle, GenerationEvent(delta, None, len(s.prompt_ids), len(s.generated)))

    def _stop_cut(self, s: _Sequence, text: str | None = None) -> int | None:
        """Where the output ends if a stop sequence now matches (only new text is searched)."""
        text = s.text if text is None else text
        longest = max(map(len, s.params.stop))
        idx, stop = find_stop_match(text, s.params.stop, max(0, s.scanned - longest + 1))
        s.scanned = len(text)
        if idx == -1:
            return None
        return idx + len(stop) if s.params.include_stop_str_in_output else idx

    def _final_text(self, s: _Sequence, keep_last: bool) -> str:
        """The whole output, decoded once; includes any incomplete trailing character as U+FFFD."""
        ids = s.generated if keep_last else s.generated[:-1]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        sent = s.text[: s.emitted]
        # The streamed prefix is authoritative: a tokenizer whose full decode differs keeps what was sent.
        return text if text.startswith(sent) else s.text

    def _finish(self, s: _Sequence, reason: str, text: str, error: str | None = None) -> None:
        s.finished = True
        self.observer.generated_tokens(len(s.generated))
        delta = text[s.emitted :] if reason in (FINISH_STOP, FINISH_LENGTH) else ""
        s.emitted = max(s.emitted, len(text))
        self._emit(s.handle, GenerationEvent(delta, reason, len(s.prompt_ids), len(s.generated), error=error))
