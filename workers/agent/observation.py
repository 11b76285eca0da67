"""How a tool's output reaches the model: inside `<tool_response>` delimiters, defanged.

A web page, a search snippet or a file is foreign text. If it could write `</tool_response>`
it would end the observation and go on as if it were the model or the prompt: its own
`<report>`, `<tool_call>` or `<answer>`, or a chat-template token that starts a new turn. So
every tag of the agent protocol (and every chat-template token) in the content is neutralised
before it is wrapped: its `<` becomes `&lt;` (and `<|` becomes `&lt;|`). The text stays
readable, a model still sees what the page says, but neither the model's chat template nor our
parser can read it as structure. Both modes deliver observations through `wrap`.
"""

from __future__ import annotations

import re

OPEN = "<tool_response>"
CLOSE = "</tool_response>"

# Every tag our prompts, parser or the released model's chat template give a meaning to. Spaces,
# a slash anywhere before the name, attributes and any case are matched: a model reads
# `< /Tool_Response >` as a closer too.
PROTOCOL_TAGS = (
    "tool_response",
    "tool_call",
    "tool_calls",
    "tools",
    "answer",
    "report",
    "think",
    "thinking",
    "code",
    "function",
    "functions",
    "observation",
    "system",
    "user",
    "assistant",
)
_TAG = re.compile(
    r"<(?=\s*/?\s*(?:" + "|".join(PROTOCOL_TAGS) + r")(?:\s[^<>]*)?/?>)",
    re.IGNORECASE,
)
# Chat-template control tokens: `<|im_start|>`, `<|im_end|>`, `<|endoftext|>`, `<|eot_id|>`, …
_SPECIAL = re.compile(r"<(?=\|[\w.-]{1,40}\|>)")


def neutralise(text: str) -> str:
    """`text` with every protocol tag and chat-template token made inert (see the module doc)."""
    return _SPECIAL.sub("&lt;", _TAG.sub("&lt;", text))


def wrap(text: str) -> str:
    """The observation as the model reads it: neutralised, between `<tool_response>` tags."""
    return f"{OPEN}\n{neutralise(text)}\n{CLOSE}"


def unwrap(text: str) -> str:
    """The content of one `wrap`ped observation (the text itself when it is not wrapped)."""
    stripped = text.strip()
    if stripped.startswith(OPEN):
        stripped = stripped[len(OPEN) :]
        end = stripped.rfind(CLOSE)
        if end >= 0:
            stripped = stripped[:end]
    return stripped.strip("\n")
