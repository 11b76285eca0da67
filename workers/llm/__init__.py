"""The LLM seam: `ChatModel` (types.py) and its OpenAI-compatible HTTP implementation."""

from workers.llm.client import OpenAIChatModel
from workers.llm.endpoints import Endpoint, resolve_endpoints
from workers.llm.limiter import Limiter, LocalLimiter
from workers.llm.types import ChatMessage, ChatModel, ChatResult, DeltaCallback, Role

__all__ = [
    "ChatMessage",
    "ChatModel",
    "ChatResult",
    "DeltaCallback",
    "Endpoint",
    "Limiter",
    "LocalLimiter",
    "OpenAIChatModel",
    "Role",
    "resolve_endpoints",
]
