"""A tiny loopback HTTP/1.1 server with pre-encoded answers, run in its own process.

The benchmarks measure clients, so the server must cost next to nothing: every
response is built once at start-up, and a request is answered with a single
``transport.write`` of ready bytes. It runs in a separate process (so that it
does not share the GIL with the client being measured) and speaks just enough
HTTP/1.1: keep-alive, ``Content-Length`` request bodies, chunked responses.

Streamed bodies use chunked transfer encoding with **one HTTP chunk per frame**
(one NDJSON line, one SSE event), as Ollama and OpenAI-compatible servers flush
them token by token: the client's HTTP stack sees one piece per token, exactly
as against a real server, while the whole body leaves in one write.

Two modes (``python -m benchmarks.server MODE ...``; the process prints one JSON
line with its ports on stdout once it listens, and serves until stdin closes):

* ``stream --chunks 20000,100,10``: one port answering ``POST /api/chat``
  (Ollama NDJSON) and ``POST /v1/chat/completions`` (OpenAI SSE); the model
  name in the request picks the length: ``bench-<N>`` streams N content chunks.
* ``hosts --ollama 90 --models 20 --blackholes 10``: that many Ollama-protocol
  servers (``/api/version``, ``/api/tags``, ``/api/show``) on their own ports,
  and black-holed ports that accept connections and never answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

from benchmarks.common import ROOT

Routes = dict[tuple[bytes, bytes], Callable[[bytes], bytes]]

_WORDS = (" the", " quick", " brown", " fox", " jumps", " over", " lazy", " dog", ".", "\n")


def _dumpb(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _chunked(frames: list[bytes], content_type: bytes) -> bytes:
    parts = [
        b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type
        + b"\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
    ]
    for frame in frames:
        parts.append(b"%x\r\n%s\r\n" % (len(frame), frame))
    parts.append(b"0\r\n\r\n")
    return b"".join(parts)


def _plain(status: int, body: bytes, content_type: bytes = b"application/json") -> bytes:
    reason = {200: b"OK", 404: b"Not Found"}.get(status, b"Error")
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
        % (status, reason, content_type, len(body), body)
    )


def ollama_stream(n: int) -> bytes:
    """What Ollama's ``/api/chat`` sends for ``n`` content chunks, framed as chunked HTTP."""
    model = f"bench-{n}:latest"
    frames = []
    for i in range(n):
        frames.append(
            _dumpb({
                "model": model,
                "created_at": "2025-01-01T00:00:00.000000Z",
                "message": {"role": "assistant", "content": _WORDS[i % 10]},
                "done": False,
            }) + b"\n"
        )
    frames.append(
        _dumpb({
            "model": model,
            "created_at": "2025-01-01T00:00:00.000000Z",
            "message": {"role": "assistant", "content": ""},
            "done_reason": "stop",
            "done": True,
            "total_duration": 1_000_000,
            "load_duration": 1000,
            "prompt_eval_count": 12,
            "prompt_eval_duration": 1000,
            "eval_count": n,
            "eval_duration": 1_000_000,
        }) + b"\n"
    )
    return _chunked(frames, b"application/x-ndjson")


def openai_stream(n: int) -> bytes:
    """What an OpenAI-compatible ``/v1/chat/completions`` sends for ``n`` content chunks."""
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1735689600,
            "model": f"bench-{n}", "system_fingerprint": "fp_bench"}

    def event(choices: list[Any], **extra: Any) -> bytes:
        return b"data: " + _dumpb({**head, "choices": choices, **extra}) + b"\n\n"

    frames = [event([{"index": 0, "delta": {"role": "assistant", "content": ""},
                      "logprobs": None, "finish_reason": None}])]
    for i in range(n):
        frames.append(event([{"index": 0,
                              "delta": {"content": _WORDS[i % 10]},
                              "logprobs": None, "finish_reason": None}]))
    frames.append(event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]))
    frames.append(event([], usage={"prompt_tokens": 12, "completion_tokens": n,
                                   "total_tokens": 12 + n}))
    frames.append(b"data: [DONE]\n\n")
    return _chunked(frames, b"text/event-stream; charset=utf-8")


_MODEL_RE = re.compile(rb'"model"\s*:\s*"bench-(\d+)')


def stream_routes(counts: list[int]) -> Routes:
    """Routes for the ``stream`` mode."""
    ndjson = {str(n).encode(): ollama_stream(n) for n in counts}
    sse = {str(n).encode(): openai_stream(n) for n in counts}
    missing = _plain(404, b'{"error":"model not found (use bench-N)"}')

    def pick(table: dict[bytes, bytes]) -> Callable[[bytes], bytes]:
        def answer(body: bytes) -> bytes:
            match = _MODEL_RE.search(body)
            return table.get(match.group(1), missing) if match else missing
        return answer

    return {(b"POST", b"/api/chat"): pick(ndjson), (b"POST", b"/v1/chat/completions"): pick(sse)}


def ollama_host_routes(index: int, n_models: int) -> Routes:
    """An Ollama server with ``n_models`` models (``/api/version``, ``/api/tags``,
    ``/api/show``)."""
    models = []
    shows: dict[str, bytes] = {}
    for j in range(n_models):
        name = f"host{index}-model{j}:latest"
        digest = f"{index:04x}{j:04x}".ljust(64, "0")
        details = {"parent_model": "", "format": "gguf", "family": "llama",
                   "families": ["llama"], "parameter_size": "8.0B",
                   "quantization_level": "Q4_K_M"}
        models.append({"name": name, "model": name, "modified_at": "2025-01-01T00:00:00Z",
                       "size": 4_920_000_000 + j, "digest": digest, "details": details})
        shows[name] = _plain(200, _dumpb({
            "license": "", "modelfile": "", "parameters": "stop \"<|eot_id|>\"",
            "template": "{{ .Prompt }}", "details": details,
            "model_info": {"general.architecture": "llama",
                           "general.parameter_count": 8_030_261_248,
                           "llama.context_length": 131072, "llama.embedding_length": 4096},
            "capabilities": ["completion", "tools"] if j % 2 else ["completion"],
            "modified_at": "2025-01-01T00:00:00Z",
        }))
    version = _plain(200, b'{"version":"0.6.5"}')
    tags = _plain(200, _dumpb({"models": models}))
    root = _plain(200, b"Ollama is running", b"text/plain; charset=utf-8")
    missing = _plain(404, b'{"error":"model not found"}')
    name_re = re.compile(rb'"(?:model|name)"\s*:\s*"([^"]+)"')

    def show(body: bytes) -> bytes:
        match = name_re.search(body)
        return shows.get(match.group(1).decode(), missing) if match else missing

    return {
        (b"GET", b"/"): lambda _b: root,
        (b"GET", b"/api/version"): lambda _b: version,
        (b"GET", b"/api/tags"): lambda _b: tags,
        (b"POST", b"/api/show"): show,
    }


class _HTTP(asyncio.Protocol):
    """Just enough HTTP/1.1: keep-alive, Content-Length bodies, pipelining."""

    def __init__(self, routes: Routes) -> None:
        self.routes = routes
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = lower.find(b"\r\n", at + 2)
                length = int(lower[at + 17: stop if stop >= 0 else None].strip())
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4: end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            method, _, rest = head.partition(b" ")
            path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
            handler = self.routes.get((method, path))
            answer = handler(body) if handler else _plain(404, b'{"error":"no such route"}')
            assert self.transport is not None
            self.transport.write(answer)


class _Blackhole(asyncio.Protocol):
    """Accepts and never answers."""

    def __init__(self, keep: list[asyncio.BaseTransport]) -> None:
        self.keep = keep

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.keep.append(transport)


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    info: dict[str, Any] = {}
    servers = []
    if args.mode == "stream":
        routes = stream_routes([int(c) for c in args.chunks.split(",")])
        server = await loop.create_server(lambda: _HTTP(routes), "127.0.0.1", 0, backlog=4096)
        servers.append(server)
        info["port"] = server.sockets[0].getsockname()[1]
    else:
        info["ollama"] = []
        for i in range(args.ollama):
            routes = ollama_host_routes(i, args.models)
            server = await loop.create_server(
                lambda routes=routes: _HTTP(routes), "127.0.0.1", 0, backlog=1024
            )
            servers.append(server)
            info["ollama"].append(server.sockets[0].getsockname()[1])
        kept: list[asyncio.BaseTransport] = []
        info["blackholes"] = []
        for _ in range(args.blackholes):
            server = await loop.create_server(lambda: _Blackhole(kept), "127.0.0.1", 0)
            servers.append(server)
            info["blackholes"].append(server.sockets[0].getsockname()[1])
    stop = asyncio.Event()
    # Serve until the parent closes our stdin (or dies).
    threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)),
                     daemon=True).start()
    print(json.dumps(info), flush=True)
    await stop.wait()
    for server in servers:
        server.close()


def main() -> None:
    """``python -m benchmarks.server MODE ...``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.server")
    parser.add_argument("mode", choices=["stream", "hosts"])
    parser.add_argument("--chunks", default="20000,100,10")
    parser.add_argument("--ollama", type=int, default=90)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--blackholes", type=int, default=10)
    asyncio.run(_serve(parser.parse_args()))


class ServerProcess:
    """``with ServerProcess("stream", "--chunks", "100") as info:`` — the server's ports."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> dict[str, Any]:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.server", *self.args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark server {self.args} did not start")
        info: dict[str, Any] = json.loads(line)
        return info

    def __exit__(self, *exc: object) -> None:
        proc = self.proc
        if proc is None:
            return
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
