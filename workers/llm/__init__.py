"""The LLM seam: `ChatModel` (types.py) and its OpenAI-compatible HTTP implementation: one
`EndpointModel` per endpoint (client.py) over our HTTP/1.1 client (http.py), each role's chain
under a `FallbackModel` (fallback.py), all owned by `OpenAIChatModel` (model.py)."""

from workers.llm.client import EndpointModel
from workers.llm.endpoints import Endpoint, resolve_endpoints
from workers.llm.fallback import FallbackModel
from workers.llm.limiter import Limiter, LocalLimiter
from workers.llm.model import OpenAIChatModel
from workers.llm.types import ChatMessage, ChatModel, ChatResult, DeltaCallback, Role

__all__ = [
    "ChatMessage",
    "ChatModel",
    "ChatResult",
    "DeltaCallback",
    "Endpoint",
    "EndpointModel",
    "FallbackModel",
    "Limiter",
    "LocalLimiter",
    "OpenAIChatModel",
    "Role",
    "resolve_endpoints",
]
