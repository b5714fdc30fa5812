"""A loopback server speaking Ollama's native API (and its ``/v1/models``).

Routes (as in ollama ``server/routes.go``; gin answers ``404 page not found`` /
``405 method not allowed`` as text/plain otherwise):

``GET|HEAD /``, ``GET|HEAD /api/version``, ``GET|HEAD /api/tags``, ``POST /api/show``,
``GET /api/ps``, ``POST /api/chat``, ``POST /api/generate``, ``POST /api/embed``,
``POST /api/embeddings`` (legacy), ``GET /v1/models``, ``GET /v1/models/{model}``.

Chat/generate behaviour: ``stream`` defaults to true (``application/x-ndjson``, one
object per line, the last with ``done: true`` and the metrics); ``think`` needs the
``thinking`` capability (400 otherwise) and defaults to on for such models;
``tools`` need the ``tools`` capability; tool calls come whole, arguments as a JSON
object; empty ``messages`` (chat) / ``prompt`` (generate) answer the load/unload
object; ``options.num_predict`` truncates (``done_reason: "length"``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
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
    fake_embedding,
)

__all__ = ["DEFAULT_OLLAMA_MODELS", "OllamaServer"]

NDJSON = "application/x-ndjson"
MID_STREAM_ERROR = "an error was encountered while running the model"

DEFAULT_OLLAMA_MODELS: tuple[ServedModel, ...] = (
    ServedModel(
        name="llama3.2:latest",
        digest="a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        family="llama",
        parameter_size="3.2B",
        quantization_level="Q4_K_M",
        context_length=131072,
        num_ctx=4096,
        capabilities=("completion", "tools"),
    ),
    ServedModel(
        name="qwen3:4b",
        size=2_497_293_931,
        family="qwen3",
        parameter_size="4.0B",
        quantization_level="Q4_K_M",
        context_length=40960,
        capabilities=("completion", "tools", "thinking"),
    ),
    ServedModel(
        name="nomic-embed-text:latest",
        size=274_302_450,
        family="nomic-bert",
        parameter_size="137M",
        quantization_level="F16",
        context_length=2048,
        capabilities=("embedding",),
        embedding_length=16,
    ),
)

_THINK_LEVELS = ("low", "medium", "high", "max")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _normalize(name: str) -> str:
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def _details(m: ServedModel) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": m.format,
        "family": m.family,
        "families": [m.family],
        "parameter_size": m.parameter_size,
        "quantization_level": m.quantization_level,
    }


def _epoch(rfc3339: str) -> int:
    text = rfc3339.replace("Z", "+00:00")
    # Python < 3.11 cannot parse nanoseconds: keep at most 6 fraction digits
    if "." in text:
        head, rest = text.split(".", 1)
        digits = "".join(ch for ch in rest if ch.isdigit())
        tz = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{tz}"
    return int(datetime.fromisoformat(text).timestamp())


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(_text_of(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


class OllamaServer(ModelServer):
    """Ollama's native API. See the module docstring for routes and behaviour.

    ``models`` defaults to :data:`DEFAULT_OLLAMA_MODELS` (``llama3.2:latest`` with
    tools, ``qwen3:4b`` with tools+thinking, ``nomic-embed-text:latest`` embedding).
    Names without a tag get ``:latest``. ``version`` is what ``/api/version`` says.
    """

    def __init__(
        self,
        models: Sequence[ServedModel] | None = None,
        *,
        version: str = "0.12.6",
        **kwargs: Any,
    ) -> None:
        super().__init__(DEFAULT_OLLAMA_MODELS if models is None else models, **kwargs)
        self.version = version
        self.add_route(("GET", "HEAD"), "/", self._root)
        self.add_route(("GET", "HEAD"), "/api/version", self._version)
        self.add_route(("GET", "HEAD"), "/api/tags", self._tags)
        self.add_route("POST", "/api/show", self._show)
        self.add_route("GET", "/api/ps", self._ps)
        self.add_route("POST", "/api/chat", self._chat)
        self.add_route("POST", "/api/generate", self._generate)
        self.add_route("POST", "/api/embed", self._embed)
        self.add_route("POST", "/api/embeddings", self._embeddings)
        self.add_route("GET", "/v1/models", self._v1_models)
        self.add_route("GET", "/v1/models/{model:.+}", self._v1_model)

    # ---- bookkeeping -------------------------------------------------------------------

    @property
    def show_calls(self) -> int:
        """How many ``POST /api/show`` requests arrived (for digest-cache tests)."""
        return self.count("/api/show", "POST")

    def _name_matches(self, model: ServedModel, name: str) -> bool:
        return model.ollama_name == _normalize(name)

    def error_reply(self, status: int, message: str | None = None) -> Reply:
        """``{"error": "…"}`` with Ollama's usual message for the status."""
        defaults = {
            400: "invalid request",
            404: "model not found",
            429: "rate limit exceeded, please try again later",
            500: MID_STREAM_ERROR,
            502: "bad gateway",
            503: "server busy, please try again.  maximum pending requests exceeded",
        }
        return Reply.json({"error": message or defaults.get(status, "error")}, status)

    @staticmethod
    def _bad(message: str, status: int = 400) -> Reply:
        return Reply.json({"error": message}, status)

    def _parse(self, ctx: RequestContext, go_type: str) -> dict[str, Any] | Reply:
        if not ctx.body.strip():
            return self._bad("missing request body")
        try:
            data = json.loads(ctx.body)
        except ValueError:
            first = ctx.body.lstrip()[:1].decode(errors="replace")
            return self._bad(f"invalid character '{first}' looking for beginning of value")
        if not isinstance(data, dict):
            kind = "array" if isinstance(data, list) else type(data).__name__
            return self._bad(f"json: cannot unmarshal {kind} into Go value of type {go_type}")
        return data

    # ---- simple routes -----------------------------------------------------------------

    async def _root(self, ctx: RequestContext) -> Reply:
        return Reply.text("Ollama is running")

    async def _version(self, ctx: RequestContext) -> Reply:
        return Reply.json({"version": self.version})

    async def _tags(self, ctx: RequestContext) -> Reply:
        models = [
            {
                "name": m.ollama_name,
                "model": m.ollama_name,
                "modified_at": m.modified_at,
                "size": m.size,
                "digest": m.digest_hex,
                "details": _details(m),
            }
            for m in self.models
        ]
        return Reply.json({"models": models})

    async def _ps(self, ctx: RequestContext) -> Reply:
        expires = (datetime.now(timezone.utc) + timedelta(minutes=5)).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ"
        )
        models = [
            {
                "name": m.ollama_name,
                "model": m.ollama_name,
                "size": m.size,
                "digest": m.digest_hex,
                "details": _details(m),
                "expires_at": expires,
                "size_vram": m.size,
                "context_length": m.num_ctx or min(4096, m.context_length),
            }
            for m in self.models
            if m.loaded
        ]
        return Reply.json({"models": models})

    async def _show(self, ctx: RequestContext) -> Reply:
        req = self._parse(ctx, "api.ShowRequest")
        if isinstance(req, Reply):
            return req
        name = req.get("model") or req.get("name")
        if not name:
            return self._bad("model is required")
        m = self.find_model(str(name))
        if m is None:
            return self._bad(f"model '{name}' not found", 404)
        arch = m.family
        params = []
        if m.num_ctx is not None:
            params.append(f"{'num_ctx':<30} {m.num_ctx}")
        params.append(f'{"stop":<30} "<|eot_id|>"')
        verbose = bool(req.get("verbose"))
        model_info: dict[str, Any] = {
            "general.architecture": arch,
            "general.basename": m.ollama_name.split(":")[0].rsplit("/", 1)[-1],
            "general.file_type": 15,
            "general.parameter_count": m.parameter_count,
            "general.quantization_version": 2,
            f"{arch}.context_length": m.context_length,
            f"{arch}.embedding_length": m.embedding_length,
            "tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.tokens": ["<s>", "</s>", "a", "b"] if verbose else None,
            "tokenizer.ggml.token_type": [3, 3, 1, 1] if verbose else None,
            "tokenizer.ggml.merges": [] if verbose else None,
        }
        modelfile = (
            '# Modelfile generated by "ollama show"\n'
            "# To build a new Modelfile based on this, replace FROM with:\n"
            f"# FROM {m.ollama_name}\n\n"
            f"FROM /root/.ollama/models/blobs/sha256-{m.digest_hex}\n"
            'TEMPLATE """{{ .Prompt }}"""\n'
            + "".join(f"PARAMETER {line.split()[0]} {line.split(None, 1)[1]}\n" for line in params)
        )
        return Reply.json(
            {
                "license": "LICENSE TEXT",
                "modelfile": modelfile,
                "parameters": "\n".join(params),
                "template": "{{ .Prompt }}",
                "details": _details(m),
                "model_info": model_info,
                "capabilities": list(m.capabilities),
                "modified_at": m.modified_at,
            }
        )

    async def _v1_models(self, ctx: RequestContext) -> Reply:
        return Reply.json({"object": "list", "data": [self._v1_entry(m) for m in self.models]})

    async def _v1_model(self, ctx: RequestContext) -> Reply:
        m = self.find_model(ctx.params["model"])
        if m is None:
            return Reply.json(
                {
                    "error": {
                        "message": f'model "{ctx.params["model"]}" not found',
                        "type": "not_found_error",
                        "param": None,
                        "code": None,
                    }
                },
                404,
            )
        return Reply.json(self._v1_entry(m))

    @staticmethod
    def _v1_entry(m: ServedModel) -> dict[str, Any]:
        owner = m.owned_by or (m.ollama_name.split("/")[0] if "/" in m.ollama_name else "library")
        return {
            "id": m.ollama_name,
            "object": "model",
            "created": _epoch(m.modified_at),
            "owned_by": owner,
        }

    # ---- generation --------------------------------------------------------------------

    def _check_model(self, req: dict[str, Any], action: str) -> tuple[str, ServedModel] | Reply:
        name = req.get("model")
        if not name or not isinstance(name, str):
            return self._bad("model is required")
        m = self.find_model(name)
        if m is None:
            return self._bad(f'model "{name}" not found, try pulling it first', 404)
        if action and not m.has("completion"):
            return self._bad(f'"{name}" does not support {action}')
        return name, m

    def _think(self, req: dict[str, Any], name: str, m: ServedModel) -> bool | Reply:
        think = req.get("think")
        if think is None:
            return m.has("thinking")
        if isinstance(think, bool):
            on = think
        elif isinstance(think, str) and think in _THINK_LEVELS:
            on = True
        else:
            return self._bad("invalid think value")
        if on and not m.has("thinking"):
            return self._bad(f'"{name}" does not support thinking')
        return on

    @staticmethod
    def _metrics(prompt_tokens: int, eval_count: int) -> dict[str, Any]:
        load, prompt_d, eval_d = (
            1_334_875,
            1_000_000 * max(1, prompt_tokens),
            10_000_000 * max(1, eval_count),
        )
        metrics: dict[str, Any] = {
            "total_duration": load + prompt_d + eval_d + 500_000,
            "load_duration": load,
        }
        if prompt_tokens:
            metrics["prompt_eval_count"] = prompt_tokens
        metrics["prompt_eval_duration"] = prompt_d
        if eval_count:
            metrics["eval_count"] = eval_count
        metrics["eval_duration"] = eval_d
        return metrics

    @staticmethod
    def _tool_calls(reply: ScriptedReply) -> list[dict[str, Any]]:
        return [
            {
                "id": tc.call_id(i),
                "function": {"index": i, "name": tc.name, "arguments": dict(tc.arguments)},
            }
            for i, tc in enumerate(reply.tool_calls)
        ]

    def _ndjson_reply(
        self,
        frames: list[bytes],
        text_target: tuple[int, bytes] | None,
        model: str,
        created: str,
        field: str,
    ) -> Reply:
        broken = dumpb({"model": model, "created_at": created})[:-1] + b',"' + field.encode()
        return Reply(
            content_type=NDJSON,
            chunks=frames,
            streaming=True,
            error_chunk=_ollama_error_chunk,
            malformed_chunk=broken + b'":{"role":"assistant","content":"\n',
            text_target=text_target,
        )

    async def _chat(self, ctx: RequestContext) -> Reply:
        req = self._parse(ctx, "api.ChatRequest")
        if isinstance(req, Reply):
            return req
        checked = self._check_model(req, "chat")
        if isinstance(checked, Reply):
            return checked
        name, m = checked
        think = self._think(req, name, m)
        if isinstance(think, Reply):
            return think
        if req.get("tools") and not m.has("tools"):
            return self._bad(f'"{name}" does not support tools')
        messages = req.get("messages") or []
        created = _now()
        if not messages:
            reason = "unload" if req.get("keep_alive") in (0, "0", "0s") else "load"
            return Reply.json(
                {
                    "model": name,
                    "created_at": created,
                    "message": {"role": "assistant", "content": ""},
                    "done_reason": reason,
                    "done": True,
                }
            )
        texts = [_text_of(msg.get("content")) for msg in messages if isinstance(msg, dict)]
        users = [
            _text_of(msg.get("content"))
            for msg in messages
            if isinstance(msg, dict) and msg.get("role") == "user"
        ]
        json_mode = req.get("format") not in (None, "")

        def default() -> ScriptedReply:
            thinking = f"Thinking about: {users[-1] if users else ''}" if think else None
            return ScriptedReply(
                content=default_echo(users[-1] if users else None, json_mode=json_mode),
                thinking=thinking,
            )

        reply = self.next_reply(req, default)
        options = req.get("options") or {}
        reply, cut = reply.truncated(options.get("num_predict"))
        thinking = reply.thinking_pieces if think else ()
        prompt_tokens = (
            reply.prompt_tokens
            if reply.prompt_tokens is not None
            else estimate_prompt_tokens(texts)
        )
        content = reply.content_chunks
        eval_count = (
            reply.completion_tokens
            if reply.completion_tokens is not None
            else len(content) + len(thinking) + len(reply.tool_calls)
        )
        done_reason = reply.done_reason or ("length" if cut else "stop")
        final_fields = {"done_reason": done_reason, **self._metrics(prompt_tokens, eval_count)}
        tool_calls = self._tool_calls(reply)

        if req.get("stream") is False:
            message: dict[str, Any] = {"role": "assistant", "content": reply.text}
            if thinking:
                message["thinking"] = "".join(thinking)
            if tool_calls:
                message["tool_calls"] = tool_calls
            body = {
                "model": name,
                "created_at": created,
                "message": message,
                "done": True,
                **final_fields,
            }
            whole = (0, dumpb(reply.text)) if reply.text else None
            return Reply(chunks=(dumpb(body),), text_target=whole)

        head = {"model": name, "created_at": created}
        frames: list[bytes] = []
        if thinking:
            pre, post = frame_template(
                {
                    **head,
                    "message": {"role": "assistant", "content": "", "thinking": PIECE},
                    "done": False,
                },
                after=b"\n",
            )
            frames.extend(pre + dumpb(p) + post for p in thinking)
        target: tuple[int, bytes] | None = None
        if content:
            pre, post = frame_template(
                {**head, "message": {"role": "assistant", "content": PIECE}, "done": False},
                after=b"\n",
            )
            target = (len(frames), dumpb(content[0]))
            frames.extend(pre + dumpb(p) + post for p in content)
        if tool_calls:
            frames.append(
                dumpb(
                    {
                        **head,
                        "message": {"role": "assistant", "content": "", "tool_calls": tool_calls},
                        "done": False,
                    }
                )
                + b"\n"
            )
        frames.append(
            dumpb(
                {
                    **head,
                    "message": {"role": "assistant", "content": ""},
                    "done": True,
                    **final_fields,
                }
            )
            + b"\n"
        )
        return self._ndjson_reply(frames, target, name, created, "message")

    async def _generate(self, ctx: RequestContext) -> Reply:
        req = self._parse(ctx, "api.GenerateRequest")
        if isinstance(req, Reply):
            return req
        checked = self._check_model(req, "generate")
        if isinstance(checked, Reply):
            return checked
        name, m = checked
        think = self._think(req, name, m)
        if isinstance(think, Reply):
            return think
        prompt = req.get("prompt") or ""
        created = _now()
        if not prompt:
            reason = "unload" if req.get("keep_alive") in (0, "0", "0s") else "load"
            return Reply.json(
                {
                    "model": name,
                    "created_at": created,
                    "response": "",
                    "done": True,
                    "done_reason": reason,
                }
            )
        system = req.get("system") or ""
        json_mode = req.get("format") not in (None, "")

        def default() -> ScriptedReply:
            return ScriptedReply(
                content=default_echo(prompt, json_mode=json_mode),
                thinking=f"Thinking about: {prompt}" if think else None,
            )

        reply = self.next_reply(req, default)
        reply, cut = reply.truncated((req.get("options") or {}).get("num_predict"))
        thinking = reply.thinking_pieces if think else ()
        texts = [system, prompt] if system else [prompt]
        prompt_tokens = (
            reply.prompt_tokens
            if reply.prompt_tokens is not None
            else estimate_prompt_tokens(texts)
        )
        content = reply.content_chunks
        eval_count = (
            reply.completion_tokens
            if reply.completion_tokens is not None
            else len(content) + len(thinking)
        )
        final_fields = {
            "done_reason": reply.done_reason or ("length" if cut else "stop"),
            "context": list(range(1, min(prompt_tokens + eval_count, 64) + 1)),
            **self._metrics(prompt_tokens, eval_count),
        }
        head = {"model": name, "created_at": created}
        if req.get("stream") is False:
            body: dict[str, Any] = {**head, "response": reply.text}
            if thinking:
                body["thinking"] = "".join(thinking)
            body.update(done=True, **final_fields)
            whole = (0, dumpb(reply.text)) if reply.text else None
            return Reply(chunks=(dumpb(body),), text_target=whole)
        frames: list[bytes] = []
        if thinking:
            pre, post = frame_template(
                {**head, "response": "", "thinking": PIECE, "done": False}, after=b"\n"
            )
            frames.extend(pre + dumpb(p) + post for p in thinking)
        target: tuple[int, bytes] | None = None
        if content:
            pre, post = frame_template({**head, "response": PIECE, "done": False}, after=b"\n")
            target = (len(frames), dumpb(content[0]))
            frames.extend(pre + dumpb(p) + post for p in content)
        frames.append(dumpb({**head, "response": "", "done": True, **final_fields}) + b"\n")
        return self._ndjson_reply(frames, target, name, created, "response")

    async def _embed(self, ctx: RequestContext) -> Reply:
        req = self._parse(ctx, "api.EmbedRequest")
        if isinstance(req, Reply):
            return req
        checked = self._check_model(req, "")
        if isinstance(checked, Reply):
            return checked
        name, m = checked
        raw = req.get("input", "")
        inputs = [raw] if isinstance(raw, str) else [str(x) for x in raw or []]
        dims = req.get("dimensions") or m.embedding_length
        return Reply.json(
            {
                "model": name,
                "embeddings": [fake_embedding(text, int(dims)) for text in inputs],
                "total_duration": 14_143_917,
                "load_duration": 1_019_500,
                "prompt_eval_count": estimate_prompt_tokens(inputs) if inputs else 0,
            }
        )

    async def _embeddings(self, ctx: RequestContext) -> Reply:
        req = self._parse(ctx, "api.EmbeddingRequest")
        if isinstance(req, Reply):
            return req
        checked = self._check_model(req, "")
        if isinstance(checked, Reply):
            return checked
        _, m = checked
        prompt = req.get("prompt") or ""
        vector = fake_embedding(prompt, m.embedding_length) if prompt else []
        return Reply.json({"embedding": vector})


def _ollama_error_chunk(payload: Any) -> bytes:
    if payload is None:
        payload = {"error": MID_STREAM_ERROR}
    elif isinstance(payload, str):
        payload = {"error": payload}
    return dumpb(payload) + b"\n"
