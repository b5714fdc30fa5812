"""A loopback server speaking Anthropic's Messages API.

Routes: ``POST /v1/messages``, ``POST /v1/messages/count_tokens``, ``GET /v1/models``,
``GET /v1/models/{id}``; anything else → 404 ``not_found_error``.

Checks on ``/v1/messages``, in order: the key (``x-api-key``, or ``Authorization:
Bearer`` when ``accept_bearer``; 401 ``authentication_error``) when ``api_key`` is
set; the ``anthropic-version`` header (400); a JSON body with ``model``,
``max_tokens`` and ``messages`` (400 ``invalid_request_error``); the model, if
``strict_models`` (404 ``not_found_error``).

Replies: content blocks ``thinking`` (only when the request enables ``thinking``)
then ``text`` then ``tool_use``; ``stop_reason`` ``end_turn`` / ``tool_use`` /
``max_tokens``; usage with ``input_tokens``, ``output_tokens``,
``cache_creation_input_tokens``, ``cache_read_input_tokens``. Streams are SSE with
named events in the documented order (``message_start``; per block
``content_block_start``, deltas, ``content_block_stop``; a ``ping`` after the first
block start; ``message_delta`` with cumulative ``output_tokens``; ``message_stop``;
no ``[DONE]``). Every response carries a ``request-id`` header; error bodies carry
``request_id``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import Any

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
    fragments,
)

__all__ = ["DEFAULT_ANTHROPIC_MODELS", "AnthropicServer", "anthropic_error"]

DEFAULT_ANTHROPIC_MODELS: tuple[ServedModel, ...] = (
    ServedModel(
        name="claude-sonnet-4-6",
        display_name="Claude Sonnet 4.6",
        context_length=200000,
        capabilities=("completion", "tools", "vision", "thinking"),
    ),
    ServedModel(
        name="claude-haiku-4-5",
        display_name="Claude Haiku 4.5",
        context_length=200000,
        capabilities=("completion", "tools", "vision", "thinking"),
    ),
)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_MESSAGES = {
    400: "Invalid request",
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource.",
    404: "Not found",
    413: "Request exceeds the maximum allowed number of bytes.",
    429: "Number of request tokens has exceeded your per-minute rate limit",
    500: "Internal server error",
    529: "Overloaded",
}


def anthropic_error(error_type: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    """``{"type":"error","error":{"type","message"},"request_id"}``."""
    body: dict[str, Any] = {"type": "error", "error": {"type": error_type, "message": message}}
    if request_id is not None:
        body["request_id"] = request_id
    return body


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for block in content:
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "text":
                parts.append(str(block.get("text", "")))
            elif kind == "tool_result":
                parts.append(_text_of(block.get("content", "")))
            elif kind == "tool_use":
                parts.append(json.dumps(block.get("input", {})))
            elif kind == "thinking":
                parts.append(str(block.get("thinking", "")))
        return " ".join(parts)
    return ""


class AnthropicServer(ModelServer):
    """Anthropic's Messages API; see the module docstring.

    ``api_key``: the key required (``None``: no check). ``accept_bearer``: also take
    the key as ``Authorization: Bearer`` (anthropic-python 2.x sends it that way).
    ``require_version``: demand the ``anthropic-version`` header. ``strict_models``:
    404 for a model not in ``models`` (default: any name is accepted).
    """

    def __init__(
        self,
        models: Sequence[ServedModel] | None = None,
        *,
        api_key: str | None = None,
        accept_bearer: bool = True,
        require_version: bool = True,
        strict_models: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(DEFAULT_ANTHROPIC_MODELS if models is None else models, **kwargs)
        self.api_key = api_key
        self.accept_bearer = accept_bearer
        self.require_version = require_version
        self.strict_models = strict_models
        self._ids = itertools.count(1)
        self.add_route("POST", "/v1/messages", self._messages)
        self.add_route("POST", "/v1/messages/count_tokens", self._count_tokens)
        self.add_route("GET", "/v1/models", self._list_models)
        self.add_route("GET", "/v1/models/{model:.+}", self._model)

    # ---- errors ------------------------------------------------------------------------

    def _request_id(self) -> str:
        return f"req_{next(self._ids):024d}"

    def error_reply(self, status: int, message: str | None = None) -> Reply:
        """Anthropic's error body for ``status`` (5xx other than 529 → ``api_error``)."""
        rid = self._request_id()
        kind = _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        text = message or _MESSAGES.get(status, "Error")
        return Reply.json(anthropic_error(kind, text, rid), status, headers={"request-id": rid})

    async def not_found_reply(self, ctx: RequestContext) -> Reply:
        """404 ``not_found_error``."""
        return self.error_reply(404, "Not Found")

    async def method_not_allowed_reply(self, ctx: RequestContext) -> Reply:
        """405 with the error shape."""
        return self.error_reply(405, "Method Not Allowed")

    def _check(self, ctx: RequestContext) -> Reply | None:
        if self.api_key is not None:
            key = ctx.header("x-api-key")
            auth = ctx.header("authorization") or ""
            ok = key == self.api_key or (self.accept_bearer and auth == f"Bearer {self.api_key}")
            if not ok:
                return self.error_reply(401, "invalid x-api-key")
        if self.require_version and not ctx.header("anthropic-version"):
            return self.error_reply(400, "anthropic-version: header is required")
        return None

    def _parse(self, ctx: RequestContext, required: Sequence[str]) -> dict[str, Any] | Reply:
        rejected = self._check(ctx)
        if rejected is not None:
            return rejected
        try:
            data = json.loads(ctx.body) if ctx.body.strip() else None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return self.error_reply(
                400, "There was an error parsing the body of your request as JSON."
            )
        for name in required:
            if name not in data:
                return self.error_reply(400, f"{name}: Field required")
        if not isinstance(data["messages"], list):
            return self.error_reply(400, "messages: Input should be a valid list")
        if "max_tokens" in data and not isinstance(data["max_tokens"], int):
            return self.error_reply(400, "max_tokens: Input should be a valid integer")
        if self.strict_models and self.find_model(str(data["model"])) is None:
            return self.error_reply(404, f"model: {data['model']}")
        return data

    # ---- routes ------------------------------------------------------------------------

    @staticmethod
    def _prompt_texts(req: dict[str, Any]) -> list[str]:
        texts = []
        if req.get("system"):
            texts.append(_text_of(req["system"]))
        texts.extend(_text_of(m.get("content")) for m in req["messages"] if isinstance(m, dict))
        return texts

    async def _count_tokens(self, ctx: RequestContext) -> Reply:
        req = self._parse(ctx, ("model", "messages"))
        if isinstance(req, Reply):
            return req
        return Reply.json({"input_tokens": estimate_prompt_tokens(self._prompt_texts(req))})

    def _model_entry(self, m: ServedModel) -> dict[str, Any]:
        return {
            "type": "model",
            "id": m.name,
            "display_name": m.display_name or m.name,
            "created_at": "2025-09-29T00:00:00Z",
        }

    async def _list_models(self, ctx: RequestContext) -> Reply:
        rejected = self._check(ctx)
        if rejected is not None:
            return rejected
        data = [self._model_entry(m) for m in self.models]
        return Reply.json(
            {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    async def _model(self, ctx: RequestContext) -> Reply:
        rejected = self._check(ctx)
        if rejected is not None:
            return rejected
        m = self.find_model(ctx.params["model"])
        if m is None:
            return self.error_reply(404, f"model: {ctx.params['model']}")
        return Reply.json(self._model_entry(m))

    async def _messages(self, ctx: RequestContext) -> Reply:
        req = self._parse(ctx, ("model", "max_tokens", "messages"))
        if isinstance(req, Reply):
            return req
        model = str(req["model"])
        thinking_cfg = req.get("thinking")
        thinking_on = isinstance(thinking_cfg, dict) and thinking_cfg.get("type") in (
            "enabled",
            "adaptive",
        )
        users = [
            _text_of(m.get("content"))
            for m in req["messages"]
            if isinstance(m, dict) and m.get("role") == "user"
        ]
        last = users[-1] if users else None

        def default() -> ScriptedReply:
            return ScriptedReply(
                content=default_echo(last),
                thinking=f"Thinking about: {last or ''}" if thinking_on else None,
            )

        reply = self.next_reply(req, default)
        prompt_tokens = (
            reply.prompt_tokens
            if reply.prompt_tokens is not None
            else estimate_prompt_tokens(self._prompt_texts(req))
        )
        reply, cut = reply.truncated(req["max_tokens"])
        content = reply.content_chunks
        thinking = reply.thinking_pieces if thinking_on else ()
        output_tokens = (
            reply.completion_tokens
            if reply.completion_tokens is not None
            else len(content) + len(thinking) + len(reply.tool_calls)
        )
        stop_reason = reply.done_reason or (
            "tool_use" if reply.tool_calls else "max_tokens" if cut else "end_turn"
        )
        usage = {
            "input_tokens": prompt_tokens,
            "cache_creation_input_tokens": reply.cache_creation_tokens or 0,
            "cache_read_input_tokens": reply.cached_tokens or 0,
            "output_tokens": output_tokens,
        }
        msg_id = f"msg_{next(self._ids):024d}"
        rid = self._request_id()
        signature = f"sig_{msg_id}"
        tools = [
            (tc.call_id(i, "toolu_"), tc.name, dict(tc.arguments), tc.arguments_json)
            for i, tc in enumerate(reply.tool_calls)
        ]
        with_text = bool(content) or not tools

        if not req.get("stream"):
            blocks: list[dict[str, Any]] = []
            if thinking:
                blocks.append(
                    {"type": "thinking", "thinking": "".join(thinking), "signature": signature}
                )
            if with_text:
                blocks.append({"type": "text", "text": reply.text})
            blocks.extend(
                {"type": "tool_use", "id": tid, "name": name, "input": args}
                for tid, name, args, _ in tools
            )
            body = {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": blocks,
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": {**usage, "service_tier": "standard"},
            }
            whole = (0, dumpb(reply.text)) if reply.text else None
            return Reply(chunks=(dumpb(body),), headers={"request-id": rid}, text_target=whole)

        def event(name: str, data: Any) -> bytes:
            return b"event: " + name.encode() + b"\ndata: " + dumpb(data) + b"\n\n"

        frames = [
            event(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": msg_id,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {**usage, "output_tokens": 1},
                    },
                },
            )
        ]
        pinged = False

        def start(index: int, block: dict[str, Any]) -> None:
            nonlocal pinged
            frames.append(
                event(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": block},
                )
            )
            if not pinged:
                frames.append(event("ping", {"type": "ping"}))
                pinged = True

        def deltas(index: int, kind: str, key: str, pieces: Sequence[str]) -> None:
            pre, post = frame_template(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": kind, key: PIECE},
                },
                before=b"event: content_block_delta\ndata: ",
                after=b"\n\n",
            )
            frames.extend(pre + dumpb(p) + post for p in pieces)

        def stop(index: int) -> None:
            frames.append(
                event("content_block_stop", {"type": "content_block_stop", "index": index})
            )

        index = 0
        target: tuple[int, bytes] | None = None
        if thinking:
            start(index, {"type": "thinking", "thinking": "", "signature": ""})
            deltas(index, "thinking_delta", "thinking", thinking)
            frames.append(
                event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "signature_delta", "signature": signature},
                    },
                )
            )
            stop(index)
            index += 1
        if with_text:
            start(index, {"type": "text", "text": ""})
            if content:
                target = (len(frames), dumpb(content[0]))
            deltas(index, "text_delta", "text", content)
            stop(index)
            index += 1
        for tid, name, _, args_json in tools:
            start(index, {"type": "tool_use", "id": tid, "name": name, "input": {}})
            deltas(index, "input_json_delta", "partial_json", ["", *fragments(args_json)])
            stop(index)
            index += 1
        if not pinged:
            frames.append(event("ping", {"type": "ping"}))
        frames.append(
            event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": output_tokens},
                },
            )
        )
        frames.append(event("message_stop", {"type": "message_stop"}))

        def error_chunk(payload: Any) -> bytes:
            body = (
                payload
                if payload is not None
                else anthropic_error("overloaded_error", "Overloaded")
            )
            return event("error", body)

        return Reply(
            content_type="text/event-stream; charset=utf-8",
            chunks=frames,
            headers={"request-id": rid, "Cache-Control": "no-cache"},
            streaming=True,
            error_chunk=error_chunk,
            malformed_chunk=b'event: content_block_delta\ndata: {"type":"content_block_delta",'
            b'"index":0,"delta":{"type":"text_delta","text":"\n\n',
            text_target=target,
        )
