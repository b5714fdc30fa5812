"""Protocol-faithful loopback HTTP servers for tests (Ollama, OpenAI-compatible, Anthropic).

Each server runs aiohttp on its own asyncio loop in a background thread, on
127.0.0.1 and a free port, so sync, asyncio and trio tests can all use it. See
:mod:`tests.servers.base` for faults and recording, :mod:`tests.servers.scripting`
for models and scripted replies, and :mod:`tests.servers.fixtures` for fixtures.
"""

from tests.servers.anthropic import AnthropicServer
from tests.servers.base import (
    PROTOCOL_DEFAULT,
    CannedResponse,
    Fault,
    LoopbackServer,
    RecordedRequest,
    Reply,
    RequestContext,
)
from tests.servers.net import BlackholeServer, blackhole_server, free_port, refused_port
from tests.servers.ollama import OllamaServer
from tests.servers.openai_compat import OpenAICompatServer
from tests.servers.scripting import (
    ModelServer,
    ScriptedReply,
    ServedModel,
    ToolCallSpec,
    estimate_prompt_tokens,
    estimate_tokens,
)

__all__ = [
    "PROTOCOL_DEFAULT",
    "AnthropicServer",
    "BlackholeServer",
    "CannedResponse",
    "Fault",
    "LoopbackServer",
    "ModelServer",
    "OllamaServer",
    "OpenAICompatServer",
    "RecordedRequest",
    "Reply",
    "RequestContext",
    "ScriptedReply",
    "ServedModel",
    "ToolCallSpec",
    "blackhole_server",
    "estimate_prompt_tokens",
    "estimate_tokens",
    "free_port",
    "refused_port",
]
