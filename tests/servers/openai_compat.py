"""A loopback OpenAI-compatible server, in the flavours of the runtimes that speak it.

Flavours (``OpenAICompatServer(flavor=...)``):

``"openai"``
    OpenAI itself: ``Authorization: Bearer`` required when ``api_key`` is set (401
    ``invalid_api_key``); usage details always present; ``"usage": null`` on stream
    chunks when usage is requested; unknown path → 404 ``Invalid URL (GET /x)``.
``"lmstudio"``
    LM Studio: ``/v1/models`` plus native ``/api/v0/models[/{id}]`` and
    ``/api/v1/models`` (each switchable: ``lmstudio_v0``, ``lmstudio_v1``,
    ``lmstudio_greeting``), ``GET /lmstudio-greeting`` → ``{"lmstudio":true}``;
    ``X-Powered-By: Express`` everywhere; unknown route or method → **200**
    ``{"error":"Unexpected endpoint or method. (GET /foo)"}``; unknown model → 404
    ``model_not_found``.
``"llamacpp"``
    llama-cpp-python's server: ``owned_by: "me"``; any ``model`` name is accepted and
    answered by the first model (echoed back); streams never carry usage
    (``include_usage`` ignored); malformed JSON → 500; FastAPI 404/405 bodies.
``"generic"`` / ``"vllm"``
    vLLM-like: ``/v1/models`` entries with ``max_model_len``, ``root``, ``permission``;
    errors ``{"error":{"message","type":"BadRequestError",…,"code":400}}``;
    ``GET /health`` and ``GET /version``; FastAPI 404/405 bodies.

Every flavour serves ``POST /v1/chat/completions``, ``POST /v1/completions`` and
``POST /v1/embeddings``. Streams are SSE ``data: {json}\\n\\n`` ending with
``data: [DONE]``: a role chunk, reasoning deltas (``reasoning_field``), content
deltas, tool calls (first delta ``index/id/type/function.name`` with empty
arguments, then argument fragments), a finish chunk with an empty delta, a usage
chunk with ``choices: []`` when ``stream_options.include_usage`` (and the flavour
supports it). ``sse_line_ending="\\r\\n"`` and ``sse_comment_every=N`` (an SSE
comment ``: keep-alive`` before the first and every N-th event) vary the framing.
A prompt estimated above the model's context (``num_ctx`` or ``context_length``)
answers 400 ``context_length_exceeded``.
"""

from __future__ import annotations

import base64
import itertools
import json
import struct
import time
from collections.abc import Sequence
from typing import Any, Literal

from tests.servers.base import (
    PIECE,
    Reply,
    RequestContext,
    dumpb,
    frame_template,
)
from tests.servers.scripting import (
    ModelServer,
    ScriptedReply,
    ServedModel,
    default_echo,
    estimate_prompt_tokens,
    fake_embedding,
    fragments,
)

__all__ = ["DEFAULT_MODELS", "Flavor", "OpenAICompatServer", "openai_error"]

Flavor = Literal["openai", "lmstudio", "llamacpp", "generic", "vllm"]
FLAVORS: tuple[str, ...] = ("openai", "lmstudio", "llamacpp", "generic", "vllm")

DEFAULT_MODELS: dict[str, tuple[ServedModel, ...]] = {
    "openai": (
        ServedModel(
            name="gpt-4o-mini",
            context_length=128000,
            capabilities=("completion", "tools", "vision"),
            owned_by="system",
        ),
        ServedModel(
            name="text-embedding-3-small",
            context_length=8191,
            capabilities=("embedding",),
            owned_by="system",
            embedding_length=16,
        ),
    ),
    "lmstudio": (
        ServedModel(
            name="qwen/qwen3-4b",
            family="qwen3",
            parameter_size="4B",
            quantization_level="Q4_K_M",
            context_length=32768,
            num_ctx=4096,
            capabilities=("completion", "tools", "thinking"),
            loaded=True,
            size=2_497_280_256,
            display_name="Qwen3 4B",
        ),
        ServedModel(
            name="google/gemma-3-4b",
            family="gemma3",
            parameter_size="4B",
            quantization_level="Q4_K_M",
            context_length=131072,
            capabilities=("completion", "vision"),
            size=3_341_081_408,
            display_name="Gemma 3 4B",
        ),
        ServedModel(
            name="text-embedding-nomic-embed-text-v1.5",
            family="nomic-bert",
            parameter_size="137M",
            quantization_level="Q4_0",
            context_length=2048,
            capabilities=("embedding",),
            publisher="nomic-ai",
            size=84_106_624,
            display_name="Nomic Embed Text v1.5",
        ),
    ),
    "llamacpp": (ServedModel(name="tiny", context_length=512, owned_by="me"),),
    "generic": (
        ServedModel(
            name="Qwen/Qwen2.5-0.5B-Instruct",
            family="qwen2",
            context_length=32768,
            capabilities=("completion", "tools"),
        ),
    ),
}
DEFAULT_MODELS["vllm"] = DEFAULT_MODELS["generic"]

_VLLM_TYPES = {
    400: "BadRequestError",
    401: "Unauthorized",
    404: "NotFoundError",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}
_OPENAI_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", None),
    503: ("server_error", None),
}
_MESSAGES = {
    400: "Bad request",
    401: "Incorrect API key provided.",
    404: "Not found",
    429: "Rate limit exceeded",
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway",
    503: "The server is overloaded or not ready yet.",
}


def openai_error(
    message: str,
    type_: str = "invalid_request_error",
    *,
    param: str | None = None,
    code: str | int | None = None,
) -> dict[str, Any]:
    """The canonical ``{"error": {message, type, param, code}}`` body."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("text")
        )
    return ""


class OpenAICompatServer(ModelServer):
    """An OpenAI-compatible server; see the module docstring for the flavours.

    Constructor: ``flavor``, ``models`` (default per flavour: :data:`DEFAULT_MODELS`),
    ``api_key`` (``None``: no auth), ``reasoning_field`` (delta/message key for
    thinking; default ``"reasoning_content"``), ``sse_line_ending``,
    ``sse_comment_every``, ``usage_in_stream`` (default: every flavour but llamacpp),
    ``lmstudio_greeting`` / ``lmstudio_v0`` / ``lmstudio_v1`` (LM Studio native routes,
    mutable at run time to emulate older or newer versions).
    """

    def __init__(
        self,
        flavor: Flavor = "generic",
        models: Sequence[ServedModel] | None = None,
        *,
        api_key: str | None = None,
        reasoning_field: str = "reasoning_content",
        sse_line_ending: str = "\n",
        sse_comment_every: int | None = None,
        usage_in_stream: bool | None = None,
        lmstudio_greeting: bool = True,
        lmstudio_v0: bool = True,
        lmstudio_v1: bool = True,
        vllm_version: str = "0.10.1",
        **kwargs: Any,
    ) -> None:
        if flavor not in FLAVORS:
            raise ValueError(f"unknown flavor {flavor!r}; one of {FLAVORS}")
        super().__init__(DEFAULT_MODELS[flavor] if models is None else models, **kwargs)
        self.flavor: str = flavor
        self.api_key = api_key
        self.reasoning_field = reasoning_field
        self.sse_line_ending = sse_line_ending
        self.sse_comment_every = sse_comment_every
        self.usage_in_stream = flavor != "llamacpp" if usage_in_stream is None else usage_in_stream
        self.lmstudio_greeting = lmstudio_greeting
        self.lmstudio_v0 = lmstudio_v0
        self.lmstudio_v1 = lmstudio_v1
        self.vllm_version = vllm_version
        self._ids = itertools.count(1)
        if flavor == "lmstudio":
            self.auto_head = True
            self.default_headers["X-Powered-By"] = "Express"
        self.add_route("GET", "/v1/models", self._list_models)
        self.add_route("POST", "/v1/chat/completions", self._chat)
        self.add_route("POST", "/v1/completions", self._completions)
        self.add_route("POST", "/v1/embeddings", self._embeddings)
        if flavor in ("openai", "generic", "vllm"):
            self.add_route("GET", "/v1/models/{model:.+}", self._model)
        if flavor in ("generic", "vllm"):
            self.add_route("GET", "/health", self._health)
            self.add_route("GET", "/version", self._version)
        if flavor == "lmstudio":
            self.add_route("GET", "/lmstudio-greeting", self._greeting)
            self.add_route("GET", "/api/v0/models", self._v0_models)
            self.add_route("GET", "/api/v0/models/{model:.+}", self._v0_model)
            self.add_route("GET", "/api/v1/models", self._v1_native_models)

    # ---- errors ------------------------------------------------------------------------

    def error_reply(self, status: int, message: str | None = None) -> Reply:
        """The flavour's error body for ``status``."""
        text = message or _MESSAGES.get(status, f"HTTP {status}")
        if self.flavor == "vllm" or self.flavor == "generic":
            body = openai_error(text, _VLLM_TYPES.get(status, "InternalServerError"), code=status)
            return Reply.json(body, status)
        type_, code = _OPENAI_TYPES.get(status, ("server_error", None))
        return Reply.json(openai_error(text, type_, code=code), status)

    async def not_found_reply(self, ctx: RequestContext) -> Reply:
        """Unknown path, per flavour."""
        method, path = ctx.recorded.method, ctx.recorded.path
        if self.flavor == "lmstudio":
            return Reply.json({"error": f"Unexpected endpoint or method. ({method} {path})"})
        if self.flavor == "openai":
            return Reply.json(openai_error(f"Invalid URL ({method} {path})"), 404)
        return Reply.json({"detail": "Not Found"}, 404)

    async def method_not_allowed_reply(self, ctx: RequestContext) -> Reply:
        """Known path, wrong method, per flavour."""
        if self.flavor in ("lmstudio", "openai"):
            return await self.not_found_reply(ctx)
        return Reply.json({"detail": "Method Not Allowed"}, 405)

    def _unauthorized(self, ctx: RequestContext) -> Reply | None:
        if self.api_key is None:
            return None
        auth = ctx.header("authorization") or ""
        if auth == f"Bearer {self.api_key}":
            return None
        if self.flavor == "llamacpp":
            return Reply.json({"detail": "Invalid API key"}, 401)
        if self.flavor == "vllm":
            return Reply.json({"error": "Unauthorized"}, 401)
        if not auth:
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            return Reply.json(openai_error(message, code=None), 401)
        return Reply.json(openai_error("Incorrect API key provided.", code="invalid_api_key"), 401)

    def _bad_request(self, message: str, *, param: str | None = None) -> Reply:
        if self.flavor in ("generic", "vllm"):
            return Reply.json(openai_error(message, "BadRequestError", code=400), 400)
        return Reply.json(openai_error(message, param=param), 400)

    def _parse(self, ctx: RequestContext) -> dict[str, Any] | Reply:
        denied = self._unauthorized(ctx)
        if denied is not None:
            return denied
        try:
            data = json.loads(ctx.body) if ctx.body.strip() else None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            if self.flavor == "llamacpp":
                return Reply.json(
                    openai_error("Internal Server Error", "internal_server_error"), 500
                )
            return self._bad_request(
                "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
                "payload, but what was sent was not valid JSON.)"
            )
        return data

    def _resolve_model(self, req: dict[str, Any]) -> tuple[str, ServedModel] | Reply:
        name = req.get("model")
        models = self.models
        if self.flavor == "llamacpp":
            if not models:
                return Reply.json(openai_error("No model loaded", "internal_server_error"), 500)
            found = self.find_model(str(name)) if name else None
            return (str(name) if name else models[0].name), found or models[0]
        if not name or not isinstance(name, str):
            return self._bad_request("you must provide a model parameter", param="model")
        m = self.find_model(name)
        if m is not None:
            return name, m
        if self.flavor == "lmstudio":
            listing = "\n".join(f"- {x.name}" for x in models)
            message = (
                f'Model "{name}" not found. Please specify a valid model.\n\n'
                f"Your models:\n{listing}"
            )
            return Reply.json(openai_error(message, param="model", code="model_not_found"), 404)
        if self.flavor == "openai":
            message = f"The model `{name}` does not exist or you do not have access to it."
            return Reply.json(openai_error(message, code="model_not_found"), 404)
        return Reply.json(
            openai_error(f"The model `{name}` does not exist.", "NotFoundError", code=404), 404
        )

    def _context_exceeded(self, m: ServedModel, prompt_tokens: int) -> Reply | None:
        limit = m.effective_context
        if prompt_tokens <= limit:
            return None
        message = (
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{prompt_tokens} tokens ({prompt_tokens} in the messages, 0 in the completion). "
            "Please reduce the length of the messages or completion."
        )
        if self.flavor in ("generic", "vllm"):
            return Reply.json(openai_error(message, "BadRequestError", code=400), 400)
        return Reply.json(
            openai_error(message, param="messages", code="context_length_exceeded"), 400
        )

    # ---- SSE ---------------------------------------------------------------------------

    @property
    def _nl(self) -> bytes:
        return self.sse_line_ending.encode()

    def _sse(self, frames: list[bytes]) -> list[bytes]:
        """Add ``: keep-alive`` comments per ``sse_comment_every`` (glued, not counted)."""
        every = self.sse_comment_every
        if not every:
            return frames
        comment = b": keep-alive" + self._nl + self._nl
        return [comment + f if i % every == 0 else f for i, f in enumerate(frames)]

    def _sse_reply(self, frames: list[bytes], text_target: tuple[int, bytes] | None) -> Reply:
        nl = self._nl
        frames.append(b"data: [DONE]" + nl + nl)

        def error_chunk(payload: Any) -> bytes:
            body = (
                payload
                if payload is not None
                else openai_error(
                    "The server had an error while processing your request.", "server_error"
                )
            )
            return b"data: " + dumpb(body) + nl + nl

        return Reply(
            content_type="text/event-stream; charset=utf-8",
            chunks=self._sse(frames),
            headers={"Cache-Control": "no-cache"},
            streaming=True,
            error_chunk=error_chunk,
            malformed_chunk=b'data: {"id":"chatcmpl-broken","object":"chat.completion.chunk",'
            b'"choices":[{"index":0,"delta":{"content":"' + nl + nl,
            text_target=text_target,
        )

    def _frame(self, obj: Any) -> bytes:
        return b"data: " + dumpb(obj) + self._nl + self._nl

    # ---- shared pieces -----------------------------------------------------------------

    def _usage(self, reply: ScriptedReply, prompt_tokens: int, completion: int) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        }
        if reply.cached_tokens is not None or self.flavor == "openai":
            usage["prompt_tokens_details"] = {
                "cached_tokens": reply.cached_tokens or 0,
                **({"audio_tokens": 0} if self.flavor == "openai" else {}),
            }
        if reply.reasoning_tokens is not None or self.flavor == "openai":
            usage["completion_tokens_details"] = {
                "reasoning_tokens": reply.reasoning_tokens or 0,
                **(
                    {
                        "audio_tokens": 0,
                        "accepted_prediction_tokens": 0,
                        "rejected_prediction_tokens": 0,
                    }
                    if self.flavor == "openai"
                    else {}
                ),
            }
        return usage

    def _head(self, obj: str, model: str, prefix: str) -> dict[str, Any]:
        head: dict[str, Any] = {
            "id": f"{prefix}{next(self._ids):08d}",
            "object": obj,
            "created": int(time.time()),
            "model": model,
        }
        if self.flavor == "openai":
            head["system_fingerprint"] = "fp_loopback"
        elif self.flavor == "lmstudio":
            head["system_fingerprint"] = model
        return head

    @staticmethod
    def _max_tokens(req: dict[str, Any]) -> int | None:
        value = req.get("max_completion_tokens", req.get("max_tokens"))
        if isinstance(value, int) and value >= 0:
            return value
        return None

    def _include_usage(self, req: dict[str, Any]) -> bool:
        opts = req.get("stream_options") or {}
        return bool(self.usage_in_stream and isinstance(opts, dict) and opts.get("include_usage"))

    # ---- /v1/chat/completions ----------------------------------------------------------

    async def _chat(self, ctx: RequestContext) -> Reply:
        req = self._parse(ctx)
        if isinstance(req, Reply):
            return req
        resolved = self._resolve_model(req)
        if isinstance(resolved, Reply):
            return resolved
        name, m = resolved
        messages = req.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._bad_request(
                "[] is too short - 'messages'" if messages == [] else "'messages' is required",
                param="messages",
            )
        if m.is_embedding:
            return self._bad_request(f"Model '{name}' is an embedding model, not a chat model")
        texts = [_text_of(x.get("content")) for x in messages if isinstance(x, dict)]
        users = [
            _text_of(x.get("content"))
            for x in messages
            if isinstance(x, dict) and x.get("role") == "user"
        ]
        fmt = req.get("response_format") or {}
        json_mode = isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")

        def default() -> ScriptedReply:
            return ScriptedReply(
                content=default_echo(users[-1] if users else None, json_mode=json_mode)
            )

        reply = self.next_reply(req, default)
        prompt_tokens = (
            reply.prompt_tokens
            if reply.prompt_tokens is not None
            else estimate_prompt_tokens(texts)
        )
        if reply.prompt_tokens is None:
            exceeded = self._context_exceeded(m, prompt_tokens)
            if exceeded is not None:
                return exceeded
        reply, cut = reply.truncated(self._max_tokens(req))
        content = reply.content_chunks
        thinking = reply.thinking_pieces
        completion = (
            reply.completion_tokens
            if reply.completion_tokens is not None
            else len(content) + len(thinking) + len(reply.tool_calls)
        )
        finish = reply.done_reason or (
            "tool_calls" if reply.tool_calls else "length" if cut else "stop"
        )
        usage = self._usage(reply, prompt_tokens, completion)
        tool_calls: list[dict[str, Any]] = [
            {
                "id": tc.call_id(i),
                "type": "function",
                "function": {"name": tc.name, "arguments": tc.arguments_json},
            }
            for i, tc in enumerate(reply.tool_calls)
        ]
        head = self._head("chat.completion", name, "chatcmpl-")

        if not req.get("stream"):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": reply.text if (reply.text or not tool_calls) else None,
            }
            if self.flavor == "openai":
                message["refusal"] = None
            if thinking:
                message[self.reasoning_field] = reply.thinking_text
            if tool_calls:
                message["tool_calls"] = tool_calls
            body = {
                **head,
                "choices": [
                    {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
                ],
                "usage": usage,
            }
            if self.flavor == "openai":
                body["service_tier"] = "default"
            whole = (0, dumpb(reply.text)) if reply.text else None
            return Reply(chunks=(dumpb(body),), text_target=whole)

        include_usage = self._include_usage(req)
        head["object"] = "chat.completion.chunk"
        extra: dict[str, Any] = {"usage": None} if include_usage and self.flavor == "openai" else {}
        nl = self._nl

        def chunk(delta: Any, finish_reason: str | None = None) -> dict[str, Any]:
            return {
                **head,
                "choices": [
                    {
                        "index": 0,
                        "delta": delta,
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                **extra,
            }

        role: dict[str, Any] = {"role": "assistant", "content": ""}
        if self.flavor == "openai":
            role["refusal"] = None
        elif self.flavor == "llamacpp":
            role = {"role": "assistant"}
        frames = [self._frame(chunk(role))]
        if thinking:
            pre, post = frame_template(
                chunk({self.reasoning_field: PIECE}), before=b"data: ", after=nl + nl
            )
            frames.extend(pre + dumpb(p) + post for p in thinking)
        target: tuple[int, bytes] | None = None
        if content:
            pre, post = frame_template(chunk({"content": PIECE}), before=b"data: ", after=nl + nl)
            target = (len(frames), dumpb(content[0]))
            frames.extend(pre + dumpb(p) + post for p in content)
        for i, tc in enumerate(tool_calls):
            first = {
                "index": i,
                "id": tc["id"],
                "type": "function",
                "function": {"name": tc["function"]["name"], "arguments": ""},
            }
            frames.append(self._frame(chunk({"tool_calls": [first]})))
            for frag in fragments(tc["function"]["arguments"]):
                frames.append(
                    self._frame(
                        chunk({"tool_calls": [{"index": i, "function": {"arguments": frag}}]})
                    )
                )
        frames.append(self._frame(chunk({}, finish)))
        if include_usage:
            frames.append(self._frame({**head, "choices": [], "usage": usage}))
        return self._sse_reply(frames, target)

    # ---- /v1/completions ---------------------------------------------------------------

    async def _completions(self, ctx: RequestContext) -> Reply:
        req = self._parse(ctx)
        if isinstance(req, Reply):
            return req
        resolved = self._resolve_model(req)
        if isinstance(resolved, Reply):
            return resolved
        name, m = resolved
        raw = req.get("prompt", "")
        prompt = raw if isinstance(raw, str) else " ".join(str(p) for p in raw or [])

        def default() -> ScriptedReply:
            return ScriptedReply(content=default_echo(prompt or None))

        reply = self.next_reply(req, default)
        prompt_tokens = (
            reply.prompt_tokens
            if reply.prompt_tokens is not None
            else estimate_prompt_tokens([prompt])
        )
        if reply.prompt_tokens is None:
            exceeded = self._context_exceeded(m, prompt_tokens)
            if exceeded is not None:
                return exceeded
        reply, cut = reply.truncated(self._max_tokens(req))
        content = reply.content_chunks
        completion = (
            reply.completion_tokens if reply.completion_tokens is not None else len(content)
        )
        finish = reply.done_reason or ("length" if cut else "stop")
        usage = self._usage(reply, prompt_tokens, completion)
        head = self._head("text_completion", name, "cmpl-")
        if not req.get("stream"):
            body = {
                **head,
                "choices": [
                    {"text": reply.text, "index": 0, "logprobs": None, "finish_reason": finish}
                ],
                "usage": usage,
            }
            target = (0, dumpb(reply.text)) if reply.text else None
            return Reply(chunks=(dumpb(body),), text_target=target)
        nl = self._nl

        def chunk(text: str, finish_reason: str | None) -> dict[str, Any]:
            return {
                **head,
                "choices": [
                    {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
                ],
            }

        pre, post = frame_template(chunk(PIECE, None), before=b"data: ", after=nl + nl)
        frames = [pre + dumpb(p) + post for p in content]
        target = (0, dumpb(content[0])) if content else None
        frames.append(self._frame(chunk("", finish)))
        if self._include_usage(req):
            frames.append(self._frame({**head, "choices": [], "usage": usage}))
        return self._sse_reply(frames, target)

    # ---- /v1/embeddings ----------------------------------------------------------------

    async def _embeddings(self, ctx: RequestContext) -> Reply:
        req = self._parse(ctx)
        if isinstance(req, Reply):
            return req
        resolved = self._resolve_model(req)
        if isinstance(resolved, Reply):
            return resolved
        name, m = resolved
        raw = req.get("input", "")
        inputs = [raw] if isinstance(raw, str) else [str(x) for x in raw or []]
        dims = int(req.get("dimensions") or m.embedding_length)
        b64 = req.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(inputs):
            vec = fake_embedding(text, dims)
            value: Any = (
                base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode() if b64 else vec
            )
            data.append({"object": "embedding", "index": i, "embedding": value})
        tokens = estimate_prompt_tokens(inputs) if inputs else 0
        return Reply.json(
            {
                "object": "list",
                "data": data,
                "model": name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    # ---- model lists -------------------------------------------------------------------

    def _owner(self, m: ServedModel) -> str:
        if m.owned_by:
            return m.owned_by
        return {
            "openai": "system",
            "lmstudio": "organization_owner",
            "llamacpp": "me",
        }.get(self.flavor, "vllm")

    def _model_entry(self, m: ServedModel) -> dict[str, Any]:
        if self.flavor == "lmstudio":
            return {"id": m.name, "object": "model", "owned_by": self._owner(m)}
        if self.flavor == "llamacpp":
            return {"id": m.name, "object": "model", "owned_by": self._owner(m), "permissions": []}
        created = 1_714_000_000
        if self.flavor == "openai":
            return {"id": m.name, "object": "model", "created": created, "owned_by": self._owner(m)}
        return {
            "id": m.name,
            "object": "model",
            "created": created,
            "owned_by": self._owner(m),
            "root": m.name,
            "parent": None,
            "max_model_len": m.context_length,
            "permission": [
                {
                    "id": f"modelperm-{m.digest_hex[:32]}",
                    "object": "model_permission",
                    "created": created,
                    "allow_create_engine": False,
                    "allow_sampling": True,
                    "allow_logprobs": True,
                    "allow_search_indices": False,
                    "allow_view": True,
                    "allow_fine_tuning": False,
                    "organization": "*",
                    "group": None,
                    "is_blocking": False,
                }
            ],
        }

    async def _list_models(self, ctx: RequestContext) -> Reply:
        denied = self._unauthorized(ctx)
        if denied is not None:
            return denied
        data = [self._model_entry(m) for m in self.models]
        if self.flavor == "lmstudio":
            return Reply.json({"data": data, "object": "list"})
        return Reply.json({"object": "list", "data": data})

    async def _model(self, ctx: RequestContext) -> Reply:
        denied = self._unauthorized(ctx)
        if denied is not None:
            return denied
        m = self.find_model(ctx.params["model"])
        if m is None:
            resolved = self._resolve_model({"model": ctx.params["model"]})
            assert isinstance(resolved, Reply)
            return resolved
        return Reply.json(self._model_entry(m))

    async def _health(self, ctx: RequestContext) -> Reply:
        return Reply.text(b"", content_type=None)

    async def _version(self, ctx: RequestContext) -> Reply:
        return Reply.json({"version": self.vllm_version})

    # ---- LM Studio native --------------------------------------------------------------

    def _publisher(self, m: ServedModel) -> str:
        if m.publisher:
            return m.publisher
        return m.name.split("/", 1)[0] if "/" in m.name else "lmstudio-community"

    def _v0_entry(self, m: ServedModel) -> dict[str, Any]:
        kind = "embeddings" if m.is_embedding else "vlm" if m.has("vision") else "llm"
        entry: dict[str, Any] = {
            "id": m.name,
            "object": "model",
            "type": kind,
            "publisher": self._publisher(m),
            "arch": m.family,
            "compatibility_type": m.format,
            "quantization": m.quantization_level,
            "state": "loaded" if m.loaded else "not-loaded",
            "max_context_length": m.context_length,
        }
        if m.loaded:
            entry["loaded_context_length"] = m.num_ctx or min(4096, m.context_length)
        if m.has("tools"):
            entry["capabilities"] = ["tool_use"]
        return entry

    async def _greeting(self, ctx: RequestContext) -> Reply:
        if not self.lmstudio_greeting:
            return await self.not_found_reply(ctx)
        return Reply.json({"lmstudio": True})

    async def _v0_models(self, ctx: RequestContext) -> Reply:
        if not self.lmstudio_v0:
            return await self.not_found_reply(ctx)
        denied = self._unauthorized(ctx)
        if denied is not None:
            return denied
        return Reply.json({"object": "list", "data": [self._v0_entry(m) for m in self.models]})

    async def _v0_model(self, ctx: RequestContext) -> Reply:
        if not self.lmstudio_v0:
            return await self.not_found_reply(ctx)
        denied = self._unauthorized(ctx)
        if denied is not None:
            return denied
        m = self.find_model(ctx.params["model"])
        if m is None:
            resolved = self._resolve_model({"model": ctx.params["model"]})
            assert isinstance(resolved, Reply)
            return resolved
        return Reply.json(self._v0_entry(m))

    async def _v1_native_models(self, ctx: RequestContext) -> Reply:
        if not self.lmstudio_v1:
            return await self.not_found_reply(ctx)
        denied = self._unauthorized(ctx)
        if denied is not None:
            return denied
        out = []
        for m in self.models:
            bits = next((int(c) for c in m.quantization_level if c.isdigit()), 4)
            entry: dict[str, Any] = {
                "type": "embedding" if m.is_embedding else "llm",
                "publisher": self._publisher(m),
                "key": m.name,
                "display_name": m.display_name or m.name.rsplit("/", 1)[-1],
            }
            if not m.is_embedding:
                entry["architecture"] = m.family
            entry.update(
                {
                    "quantization": {"name": m.quantization_level, "bits_per_weight": bits},
                    "size_bytes": m.size,
                    "params_string": m.parameter_size if not m.is_embedding else None,
                    "loaded_instances": [
                        {
                            "id": m.name,
                            "config": {
                                "context_length": m.num_ctx or min(4096, m.context_length),
                                "eval_batch_size": 512,
                                "parallel": 4,
                                "flash_attention": True,
                                "offload_kv_cache_to_gpu": True,
                            },
                        }
                    ]
                    if m.loaded
                    else [],
                    "max_context_length": m.context_length,
                    "format": m.format,
                }
            )
            if not m.is_embedding:
                caps: dict[str, Any] = {
                    "vision": m.has("vision"),
                    "trained_for_tool_use": m.has("tools"),
                }
                if m.has("thinking"):
                    caps["reasoning"] = {"allowed_options": ["off", "on"], "default": "on"}
                entry["capabilities"] = caps
                entry["description"] = None
            out.append(entry)
        return Reply.json({"models": out})
