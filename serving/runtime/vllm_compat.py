"""vLLM's OpenAI-server request extensions, so clients written for vLLM work unmodified.

vLLM's OpenAI server accepts extra request fields beyond OpenAI's API; clients written for
it (GuideLLM, vLLM's own benchmarks, many SDK wrappers) send them. The field list follows
vLLM's ``vllm/entrypoints/openai/protocol.py`` (``ChatCompletionRequest`` /
``CompletionRequest``, the blocks marked ``chat-completion-sampling-params`` and
``chat-completion-extra-params``; read at commit 0052bed3). Each field is, here:

* ``honoured``: it changes generation as in vLLM;
* ``ignored``: accepted and has no effect here (it has none on output text for this engine,
  e.g. ``priority`` 0 or ``cache_salt`` without a prefix cache);
* ``refused_unless_default``: accepted only with its default (neutral) value; any other
  value is a 400 naming the field, because the engine cannot do what it asks.

Fields that neither OpenAI nor vLLM define are still refused (``extra="forbid"``).
:data:`EXTENSIONS` is the single source of truth: the request models, the refusal check and
the README table come from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import Any, Union

from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr

from serving.errors import UnsupportedParameterError
from serving.runtime.config import SamplingParams

Number = Union[StrictInt, StrictFloat]


class Support(str, Enum):
    """How this server treats a vLLM request extension."""

    HONOURED = "honoured"
    IGNORED = "ignored"
    REFUSED_UNLESS_DEFAULT = "refused_unless_default"


@dataclass(frozen=True)
class Extension:
    """One vLLM request field."""

    name: str
    support: Support
    default: Any  # the neutral value (what vLLM uses when the field is absent)
    note: str
    chat_only: bool = False


H, I, R = Support.HONOURED, Support.IGNORED, Support.REFUSED_UNLESS_DEFAULT

EXTENSIONS: tuple[Extension, ...] = (
    Extension("ignore_eos", H, False, "keep generating past eos, up to max_tokens"),
    Extension("min_tokens", H, 0, "eos and stop_token_ids are suppressed until this many tokens"),
    Extension("top_k", H, None, "sample among the k most likely tokens (0 or -1: all)"),
    Extension("min_p", H, None, "drop tokens below min_p x the top token's probability"),
    Extension("repetition_penalty", H, None, "penalise tokens of the prompt and output (1 = off)"),
    Extension("stop_token_ids", H, None, "also stop at these token ids"),
    Extension("include_stop_str_in_output", H, False, "keep the matched stop string in the text"),
    Extension("skip_special_tokens", H, True, "special tokens are always skipped; false is refused"),
    Extension("request_id", I, None, "accepted; responses carry their own id"),
    Extension("priority", I, 0, "one queue, first come first served; only 0 is accepted"),
    Extension("cache_salt", I, None, "no prefix cache here, so nothing to salt"),
    Extension("spaces_between_special_tokens", I, True, "special tokens are skipped, so no effect"),
    Extension("add_special_tokens", I, None, "prompts are tokenized with the tokenizer's defaults"),
    Extension("length_penalty", I, 1.0, "only used by beam search, which is refused"),
    Extension("return_tokens_as_token_ids", I, None, "only used with logprobs, which are refused"),
    Extension("use_beam_search", R, False, "beam search"),
    Extension("truncate_prompt_tokens", R, None, "prompt truncation"),
    Extension("prompt_logprobs", R, None, "prompt log probabilities"),
    Extension("allowed_token_ids", R, None, "restricting the vocabulary"),
    Extension("bad_words", R, None, "banned words"),
    Extension("guided_json", R, None, "guided decoding"),
    Extension("guided_regex", R, None, "guided decoding"),
    Extension("guided_choice", R, None, "guided decoding"),
    Extension("guided_grammar", R, None, "guided decoding"),
    Extension("guided_decoding_backend", R, None, "guided decoding"),
    Extension("guided_whitespace_pattern", R, None, "guided decoding"),
    Extension("structural_tag", R, None, "structured output"),
    Extension("logits_processors", R, None, "custom logits processors"),
    Extension("kv_transfer_params", R, None, "disaggregated serving"),
    Extension("vllm_xargs", R, None, "custom extension arguments"),
    Extension("mm_processor_kwargs", R, None, "multi-modal processing"),
    Extension("add_generation_prompt", R, True, "a chat prompt without the generation prompt", chat_only=True),
    Extension("continue_final_message", R, False, "continuing the final message", chat_only=True),
    Extension("echo", R, False, "echoing the last message", chat_only=True),
    Extension("chat_template", R, None, "a per-request chat template", chat_only=True),
    Extension("chat_template_kwargs", R, None, "chat template arguments", chat_only=True),
    Extension("documents", R, None, "documents for RAG templates", chat_only=True),
    Extension("parallel_tool_calls", I, None, "tool calling is refused, so no effect", chat_only=True),
    Extension("include_reasoning", I, True, "no reasoning parser, so no effect", chat_only=True),
    Extension("reasoning_effort", I, None, "no reasoning parser, so no effect", chat_only=True),
)

BY_NAME = {e.name: e for e in EXTENSIONS}


class VLLMStreamOptions(BaseModel):
    """``stream_options`` as vLLM reads it: ``continuous_usage_stats`` puts usage on every chunk."""

    model_config = ConfigDict(extra="forbid")
    include_usage: StrictBool = False
    continuous_usage_stats: StrictBool = False


class VLLMExtensions(BaseModel):
    """vLLM's extra fields of completions and chat completions (``ignore_eos`` is declared by the API module)."""

    model_config = ConfigDict(extra="forbid")

    min_tokens: StrictInt = 0
    top_k: StrictInt | None = None
    min_p: Number | None = None
    repetition_penalty: Number | None = None
    stop_token_ids: list[StrictInt] | None = None
    include_stop_str_in_output: StrictBool = False
    skip_special_tokens: StrictBool = True
    request_id: StrictStr | None = None
    priority: StrictInt = 0
    cache_salt: StrictStr | None = None
    spaces_between_special_tokens: StrictBool = True
    add_special_tokens: StrictBool | None = None
    length_penalty: Number = 1.0
    return_tokens_as_token_ids: StrictBool | None = None
    use_beam_search: StrictBool = False
    truncate_prompt_tokens: StrictInt | None = None
    prompt_logprobs: StrictInt | None = None
    allowed_token_ids: list[StrictInt] | None = None
    bad_words: list[StrictStr] | None = None
    guided_json: Any = None
    guided_regex: StrictStr | None = None
    guided_choice: list[StrictStr] | None = None
    guided_grammar: StrictStr | None = None
    guided_decoding_backend: StrictStr | None = None
    guided_whitespace_pattern: StrictStr | None = None
    structural_tag: StrictStr | None = None
    logits_processors: list[Any] | None = None
    kv_transfer_params: dict[str, Any] | None = None
    vllm_xargs: dict[str, Any] | None = None
    mm_processor_kwargs: dict[str, Any] | None = None


class VLLMChatExtensions(VLLMExtensions):
    """vLLM's extra fields of chat completions only."""

    add_generation_prompt: StrictBool = True
    continue_final_message: StrictBool = False
    echo: StrictBool = False
    chat_template: StrictStr | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    documents: list[dict[str, Any]] | None = None
    parallel_tool_calls: StrictBool | None = None
    include_reasoning: StrictBool = True
    reasoning_effort: StrictStr | None = None


def _neutral(value: Any, default: Any) -> bool:
    return value == default or (default is None and value in ([], {}, ""))


def refuse_unsupported(req: BaseModel, chat: bool) -> None:
    """Raise for a vLLM extension set to a value this engine cannot honour.

    Raises:
        UnsupportedParameterError: naming the field and what to do.
    """
    for ext in EXTENSIONS:
        if ext.chat_only and not chat:
            continue
        value = getattr(req, ext.name, ext.default)
        if ext.name == "skip_special_tokens" and value is False:
            raise UnsupportedParameterError(
                "skip_special_tokens: false is not supported (special tokens are always skipped); remove it",
                param=ext.name,
                code="unsupported_parameter",
            )
        if ext.name == "priority" and value != 0:
            raise UnsupportedParameterError(
                f"priority: {value} is not supported (one first-come-first-served queue); send 0 or remove it",
                param=ext.name,
                code="unsupported_parameter",
            )
        if ext.support is Support.REFUSED_UNLESS_DEFAULT and not _neutral(value, ext.default):
            raise UnsupportedParameterError(
                f"{ext.name}: {ext.note} is not supported by this server (a vLLM extension); remove it",
                param=ext.name,
                code="unsupported_parameter",
            )


def apply_sampling(params: SamplingParams, req: VLLMExtensions) -> SamplingParams:
    """The request's honoured vLLM sampling fields applied to ``params``, validated.

    Raises:
        InvalidRequestError: a value out of range, naming the field.
    """
    return dataclasses.replace(
        params,
        top_k=req.top_k if req.top_k is not None else 0,
        min_p=float(req.min_p) if req.min_p is not None else 0.0,
        repetition_penalty=float(req.repetition_penalty) if req.repetition_penalty is not None else 1.0,
        min_tokens=req.min_tokens,
        stop_token_ids=tuple(req.stop_token_ids or ()),
        include_stop_str_in_output=req.include_stop_str_in_output,
    ).validate()


def markdown_table() -> str:
    """The README's table of vLLM extensions (kept in sync by a test)."""
    rows = ["| field | here | note |", "|---|---|---|", "| `stream_options.continuous_usage_stats` | honoured | usage on every streamed chunk |"]
    for e in EXTENSIONS:
        scope = " (chat)" if e.chat_only else ""
        rows.append(f"| `{e.name}`{scope} | {e.support.value.replace('_', ' ')} | {e.note} |")
    return "\n".join(rows)
