"""Faults, recording and lifecycle of the loopback servers, seen through raw httpx."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

import anyio
import httpx
import ollama
import pytest

from tests.servers import (
    Fault,
    OllamaServer,
    OpenAICompatServer,
    blackhole_server,
    free_port,
    refused_port,
)

CHAT = {
    "model": "llama3.2",
    "messages": [{"role": "user", "content": "one two three four five six"}],
}


def lines_until_error(server: OllamaServer) -> tuple[list[str], BaseException | None]:
    got: list[str] = []
    with httpx.Client(base_url=server.url, timeout=5) as http:
        try:
            with http.stream("POST", "/api/chat", json=CHAT) as response:
                for line in response.iter_lines():
                    got.append(line)
        except httpx.HTTPError as exc:
            return got, exc
    return got, None


def test_cut_after_resets(ollama_server: OllamaServer) -> None:
    ollama_server.push_fault(Fault.cut_after(3))
    got, error = lines_until_error(ollama_server)
    assert isinstance(error, httpx.ReadError | httpx.RemoteProtocolError)
    assert len(got) == 3
    assert all(json.loads(line)["done"] is False for line in got)


def test_cut_after_fin_is_incomplete_body(ollama_server: OllamaServer) -> None:
    ollama_server.push_fault(Fault.cut_after(2, reset=False))
    got, error = lines_until_error(ollama_server)
    assert isinstance(error, httpx.RemoteProtocolError)
    assert len(got) == 2
    # a non-streamed reply has a Content-Length: cutting it leaves the body short
    ollama_server.push_fault(Fault.cut_after(0, reset=False))
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(ollama_server.url + "/api/chat", json={**CHAT, "stream": False})


def test_disconnect_without_response(ollama_server: OllamaServer) -> None:
    ollama_server.push_fault(Fault.disconnect_now(reset=False))
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(ollama_server.url + "/api/tags")
    ollama_server.push_fault(Fault.disconnect_now())
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(ollama_server.url + "/api/tags")
    assert httpx.get(ollama_server.url + "/api/tags").status_code == 200


def test_http_errors_and_retry_after(ollama_server: OllamaServer) -> None:
    url = ollama_server.url + "/api/tags"
    ollama_server.push_fault(Fault.rate_limited(retry_after=2))
    limited = httpx.get(url)
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "2")
    assert "error" in limited.json()

    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    ollama_server.push_fault(Fault.http_error(429, retry_after=when, retry_after_ms=1500))
    dated = httpx.get(url)
    parsed = parsedate_to_datetime(dated.headers["retry-after"])
    assert abs((parsed - when).total_seconds()) < 1
    assert dated.headers["retry-after-ms"] == "1500"

    ollama_server.push_fault(Fault.http_error(500, body={"error": "boom"}))
    assert httpx.get(url).json() == {"error": "boom"}
    ollama_server.push_fault(Fault.http_error(502, body=None))
    empty = httpx.get(url)
    assert (empty.status_code, empty.content) == (502, b"")
    ollama_server.push_fault(Fault.http_error(503, body=b"raw bytes"))
    assert httpx.get(url).content == b"raw bytes"
    ollama_server.push_fault(Fault.http_error(503))
    busy = httpx.get(url)
    assert busy.json()["error"].startswith("server busy")
    assert httpx.get(url).status_code == 200  # faults were one-shot


def test_fault_matching(ollama_server: OllamaServer) -> None:
    base = ollama_server.url
    ollama_server.push_fault(Fault.http_error(500), path="/api/chat")
    ollama_server.push_fault(Fault.http_error(418).on("/api/*", method="GET", times=2))
    assert httpx.get(base + "/api/tags").status_code == 418
    assert httpx.get(base + "/api/version").status_code == 418
    assert httpx.get(base + "/api/tags").status_code == 200
    assert httpx.post(base + "/api/chat", json={**CHAT, "stream": False}).status_code == 500
    ollama_server.push_fault(Fault.http_error(503), times=None)
    for _ in range(3):
        assert httpx.get(base + "/").status_code == 503
    assert len(ollama_server.pending_faults) == 1
    ollama_server.clear_faults()
    assert httpx.get(base + "/").status_code == 200


def test_combined_faults(ollama_server: OllamaServer) -> None:
    ollama_server.push_fault(Fault.drip(0.03) | Fault.cut_after(2))
    started = time.monotonic()
    got, error = lines_until_error(ollama_server)
    assert len(got) == 2 and error is not None
    assert time.monotonic() - started >= 0.05


def test_stalls_hit_timeouts(ollama_server: OllamaServer) -> None:
    ollama_server.push_fault(Fault.stall_before_headers(10))
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(ollama_server.url + "/api/tags", timeout=0.2)
    assert time.monotonic() - started < 2

    ollama_server.push_fault(Fault.stall_after_headers(10))
    with (
        httpx.Client(base_url=ollama_server.url, timeout=0.3) as http,
        http.stream("POST", "/api/chat", json=CHAT) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        with pytest.raises(httpx.ReadTimeout):
            response.read()
    assert httpx.get(ollama_server.url + "/api/tags").status_code == 200


def test_drip(ollama_server: OllamaServer) -> None:
    ollama_server.push_fault(Fault.drip(0.05))
    arrivals: list[float] = []
    started = time.monotonic()
    with (
        httpx.Client(base_url=ollama_server.url) as http,
        http.stream("POST", "/api/chat", json=CHAT) as response,
    ):
        for _ in response.iter_lines():
            arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 8
    assert arrivals[0] < arrivals[-1] - 0.2  # the lines came one by one

    ollama_server.push_fault(Fault.drip_bytes(0.0, piece_bytes=3))
    whole = httpx.post(ollama_server.url + "/api/chat", json={**CHAT, "stream": False})
    assert whole.json()["message"]["content"] == "Echo: one two three four five six"


def test_body_faults(ollama_server: OllamaServer) -> None:
    url = ollama_server.url
    ollama_server.push_fault(Fault.html())
    page = httpx.get(url + "/api/tags")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.text.startswith("<!DOCTYPE html>")

    ollama_server.push_fault(Fault.big_body(3_000_000))
    big = httpx.get(url + "/api/tags")
    assert len(big.content) == 3_000_000
    assert set(json.loads(big.content)) == {"padding"}

    ollama_server.push_fault(Fault.wrong_content_type())
    mislabelled = httpx.get(url + "/api/tags")
    assert mislabelled.headers["content-type"] == "text/plain; charset=utf-8"
    assert "models" in mislabelled.json()

    ollama_server.push_fault(Fault.invalid_utf8())
    broken = httpx.post(url + "/api/chat", json={**CHAT, "stream": False})
    assert b'"content":"\xff\xfeEcho: one' in broken.content
    with pytest.raises(UnicodeDecodeError):
        broken.content.decode()

    ollama_server.push_fault(Fault.invalid_utf8())
    streamed = httpx.post(url + "/api/chat", json=CHAT)
    first = streamed.content.split(b"\n")[0]
    assert b'"content":"\xff\xfeEcho: "' in first


def test_malformed_line(ollama_server: OllamaServer) -> None:
    ollama_server.push_fault(Fault.malformed_line(after_n_chunks=1))
    raw = httpx.post(ollama_server.url + "/api/chat", json=CHAT).text.splitlines()
    assert len(raw) == 9
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw[1])
    assert json.loads(raw[-1])["done"] is True
    ollama_server.push_fault(Fault.malformed_line(after_n_chunks=0))
    with ollama.Client(host=ollama_server.url) as client, pytest.raises(json.JSONDecodeError):
        list(client.chat(model="llama3.2", messages=CHAT["messages"], stream=True))  # type: ignore[arg-type]


def test_sse_faults() -> None:
    with OpenAICompatServer("generic") as server:
        body = {
            "model": "Qwen/Qwen2.5-0.5B-Instruct",
            "messages": [{"role": "user", "content": "a b c"}],
            "stream": True,
        }
        server.push_fault(Fault.error_mid_stream(after_n_chunks=2, error_payload={"error": "x"}))
        events = httpx.post(server.url + "/v1/chat/completions", json=body).text.split("\n\n")
        assert events[2] == 'data: {"error":"x"}'
        assert "[DONE]" not in "".join(events)
        server.push_fault(Fault.malformed_line(after_n_chunks=1))
        text = httpx.post(server.url + "/v1/chat/completions", json=body).text
        assert text.split("\n\n")[1].startswith('data: {"id":"chatcmpl-broken"')
        assert text.endswith("data: [DONE]\n\n")


def test_recording(ollama_server: OllamaServer) -> None:
    httpx.post(
        ollama_server.url + "/api/show?verbose=1",
        json={"model": "llama3.2"},
        headers={"X-Custom": "yes"},
    )
    httpx.post(ollama_server.url + "/api/show", content=b"not json")
    first, second = ollama_server.requests
    assert (first.method, first.path, dict(first.query)) == ("POST", "/api/show", {"verbose": "1"})
    assert first.header("X-CUSTOM") == "yes" and first.headers["x-custom"] == "yes"
    assert first.json == {"model": "llama3.2"}
    assert json.loads(first.body_bytes) == first.json
    assert (second.body, second.json) == (b"not json", None)
    ollama_server.reset()
    assert ollama_server.requests == []


def test_stop_cuts_streams_and_restart_same_port() -> None:
    server = OllamaServer()
    server.push_fault(Fault.drip(0.2))
    server.start()
    port = server.port
    errors: list[BaseException] = []
    first_line = threading.Event()

    def consume() -> None:
        try:
            with (
                httpx.Client(base_url=server.url, timeout=10) as http,
                http.stream("POST", "/api/chat", json=CHAT) as response,
            ):
                for _ in response.iter_lines():
                    first_line.set()
        except httpx.HTTPError as exc:
            errors.append(exc)

    reader = threading.Thread(target=consume)
    reader.start()
    assert first_line.wait(5)
    started = time.monotonic()
    server.stop_and_keep_port()
    assert time.monotonic() - started < 2
    reader.join(5)
    assert not reader.is_alive()
    assert errors and isinstance(errors[0], httpx.RemoteProtocolError | httpx.ReadError)

    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/")
    server.remove_model("qwen3:4b")
    server.restart()
    try:
        assert server.port == port
        tags = httpx.get(server.url + "/api/tags").json()
        assert [m["name"] for m in tags["models"]] == ["llama3.2:latest", "nomic-embed-text:latest"]
        assert server.count("/api/chat") == 1  # recorded before the restart
    finally:
        server.stop()
    assert not any(t.name.startswith("OllamaServer") for t in threading.enumerate())


def test_port_helpers_and_blackhole() -> None:
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{refused_port()}/", timeout=2)
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # it is free
    with blackhole_server() as hole:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(hole.url + "/api/version", timeout=0.2)
        assert time.monotonic() - started < 2
        assert hole.connections == 1


def test_ipv6_loopback() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    with OllamaServer(host="::1") as server:
        assert server.host.startswith("[::1]:")
        assert httpx.get(server.url + "/").text == "Ollama is running"


@pytest.mark.anyio
async def test_async_clients_and_faults(ollama_server: OllamaServer) -> None:
    ollama_server.push_fault(Fault.cut_after(2))
    got = []
    async with httpx.AsyncClient(base_url=ollama_server.url) as http:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            async with http.stream("POST", "/api/chat", json=CHAT) as response:
                async for line in response.aiter_lines():
                    got.append(line)
        assert len(got) == 2
        ok = await http.post("/api/chat", json={**CHAT, "stream": False})
        assert ok.json()["done"] is True


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # one backend is enough for load
async def test_thousand_concurrent_streams(anyio_backend: str) -> None:
    n = 1000
    server = OllamaServer()
    server.script_reply(chunks=["x"] * 20, times=None)
    server.push_fault(Fault.stall_after_headers(0.3), times=None)  # all open at once
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    with server:
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as http:
            counts: list[int] = []

            async def one() -> None:
                async with http.stream("POST", "/api/chat", json=CHAT) as response:
                    counts.append(sum([1 async for _ in response.aiter_lines()]))

            started = time.monotonic()
            async with anyio.create_task_group() as tg:
                for _ in range(n):
                    tg.start_soon(one)
            elapsed = time.monotonic() - started
    assert counts == [21] * n
    assert elapsed < 20
