"""Counting a ReAct transcript's tokens against the context budget.

With `agent.react_tokenizer` set to a model's `tokenizer.json` (Hugging Face `tokenizers`
format; install the `tokenizer` extra), the count is exact up to the chat template's few
framing tokens, which `MESSAGE_OVERHEAD` covers. Without one, `estimate_tokens` is used:

    ASCII characters / 4  +  one token per non-ASCII character  +  MESSAGE_OVERHEAD per message

Four ASCII characters a token is what BPE tokenizers average on English prose and JSON; a
non-ASCII character (CJK, accents, symbols) is counted as a whole token, which over-counts
rather than under-counts for most scripts. An over-count only makes the final turn come a
little early; an under-count could overflow the model's context.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from workers.errors import LLMConfigError

# Role markers and separators a chat template adds around each message (`<|im_start|>user\n`…).
MESSAGE_OVERHEAD = 4


class TokenCounter(Protocol):
    @property
    def name(self) -> str: ...

    def count(self, text: str) -> int: ...


def estimate_tokens(text: str) -> int:
    ascii_chars = sum(1 for c in text if c < "\x80")
    return math.ceil(ascii_chars / 4) + (len(text) - ascii_chars)


@dataclass(frozen=True)
class EstimateCounter:
    name: str = "estimate"

    def count(self, text: str) -> int:
        return estimate_tokens(text)


class HFTokenizerCounter:
    """A `tokenizer.json` read with the `tokenizers` package (no network, no model weights).

    Raises `LLMConfigError` (a setting to fix) when the package or the file is missing."""

    def __init__(self, path: Path) -> None:
        try:
            from tokenizers import Tokenizer  # an optional extra: imported only when configured
        except ImportError as exc:
            raise LLMConfigError(
                "HR_AGENT__REACT_TOKENIZER is set but the `tokenizers` package is missing: "
                "install heavyresearch[tokenizer]"
            ) from exc
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the library raises bare Exceptions for a bad file
            raise LLMConfigError(
                f"cannot load the tokenizer {path}: {exc}; check HR_AGENT__REACT_TOKENIZER"
            ) from exc
        self.name = f"tokenizer:{path.name}"

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


def make_counter(tokenizer_path: str) -> TokenCounter:
    if not tokenizer_path:
        return EstimateCounter()
    return HFTokenizerCounter(Path(tokenizer_path).expanduser())


def count_messages(counter: TokenCounter, messages: Sequence[Mapping[str, str]]) -> int:
    return sum(counter.count(m.get("content", "")) + MESSAGE_OVERHEAD for m in messages)
