"""Incremental detokenization: the text of each new token, in constant work per token.

Decoding the whole answer again at every step costs work that grows with the answer's
length; these decoders keep a small window instead. Both hold back an incomplete UTF-8
character (a byte-level token that is only part of an emoji or a CJK character) until the
tokens that complete it arrive, so a streamed delta never ends in U+FFFD.

* :class:`StreamDecoder` wraps ``tokenizers.decoders.DecodeStream`` (tokenizers >= 0.21),
  used for fast tokenizers whose ``decode`` does no clean-up of spaces (so the deltas add
  up to exactly ``tokenizer.decode(ids)``).
* :class:`OffsetDecoder` is the prefix/read-offset scheme (as in Hugging Face TGI and vLLM):
  decode a short window before and after the new token and emit the difference. It works
  with any tokenizer that has ``decode`` and is the fallback.
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import Protocol

logger = logging.getLogger(__name__)

try:  # tokenizers >= 0.21
    from tokenizers.decoders import DecodeStream
except ImportError:  # pragma: no cover - older tokenizers
    DecodeStream = None  # type: ignore[assignment,misc]


class IncrementalDecoder(Protocol):
    """Turns one sequence's generated token ids into text, one token at a time."""

    def step(self, token_id: int) -> str:
        """Feed the next token; return the text it completes ('' while a character is incomplete)."""
        ...


class DecoderKind(str, Enum):
    """Which incremental decoder a tokenizer gets."""

    STREAM = "decode_stream"  # tokenizers' DecodeStream
    OFFSET = "offset"  # prefix/read offsets over tokenizer.decode


class OffsetDecoder:
    """Prefix/read-offset incremental decoder over ``tokenizer.decode``.

    Args:
        tokenizer: any tokenizer with ``decode(ids, skip_special_tokens=...)``.
        skip_special_tokens: as for ``decode``.
    """

    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._ids: list[int] = []
        self._prefix = 0  # start of the context window decoded before the new tokens
        self._read = 0  # tokens up to here have been turned into emitted text

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip)

    def step(self, token_id: int) -> str:  # noqa: D102
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before) :]
        return ""


class StreamDecoder:
    """``tokenizers``' ``DecodeStream`` over a fast tokenizer's backend.

    Falls back to an :class:`OffsetDecoder` (replaying the ids seen so far) if the stream
    refuses a token, which some normalizer/decoder combinations do.

    Args:
        tokenizer: a fast (``tokenizers``-backed) transformers tokenizer.
        skip_special_tokens: as for ``decode``.
    """

    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self._tokenizer = tokenizer
        self._backend = tokenizer.backend_tokenizer
        self._skip = skip_special_tokens
        self._stream = DecodeStream(skip_special_tokens=skip_special_tokens)
        self._ids: list[int] = []
        self._fallback: OffsetDecoder | None = None

    def step(self, token_id: int) -> str:  # noqa: D102
        self._ids.append(token_id)
        if self._fallback is None:
            try:
                return self._stream.step(self._backend, token_id) or ""
            except Exception as exc:  # noqa: BLE001 - any refusal: switch decoders, keep the text right
                logger.warning("DecodeStream failed (%s); using the offset decoder for this sequence", exc)
                self._fallback = OffsetDecoder(self._tokenizer, self._skip)
                # Replay all but the new token silently: their text was already emitted.
                for tid in self._ids[:-1]:
                    self._fallback.step(tid)
        return self._fallback.step(token_id)


def decoder_kind(tokenizer) -> DecoderKind:
    """The decoder to use for ``tokenizer``: DecodeStream where its deltas equal ``decode``."""
    if (
        DecodeStream is not None
        and getattr(tokenizer, "backend_tokenizer", None) is not None
        and not getattr(tokenizer, "clean_up_tokenization_spaces", False)
    ):
        return DecoderKind.STREAM
    return DecoderKind.OFFSET


def make_decoder(tokenizer, kind: DecoderKind | None = None, skip_special_tokens: bool = True) -> IncrementalDecoder:
    """A fresh incremental decoder for one sequence.

    Args:
        tokenizer: the model's tokenizer.
        kind: force a decoder (default: :func:`decoder_kind`).
        skip_special_tokens: as for ``decode``.
    """
    kind = kind or decoder_kind(tokenizer)
    if kind is DecoderKind.STREAM:
        return StreamDecoder(tokenizer, skip_special_tokens)
    return OffsetDecoder(tokenizer, skip_special_tokens)
