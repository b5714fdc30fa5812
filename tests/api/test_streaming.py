"""Tests for the NDJSON and SSE stream readers and the error-body parser."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmfactory.api.streaming import (
    ErrorDetails,
    SSEEvent,
    build_api_error,
    iter_ndjson,
    iter_sse,
    iter_sse_json,
    parse_error_body,
)
from llmfactory.errors import (
    AuthenticationError,
    ContextLengthExceededError,
    LLMAPIError,
    MalformedResponseError,
    RateLimitError,
)

T = TypeVar("T")

PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class _Chunks:
    """An async iterator over ``parts``; a class, so nothing needs finalising if abandoned."""

    def __init__(self, parts: Iterable[bytes]) -> None:
        self._parts = iter(parts)

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        await anyio.lowlevel.checkpoint()
        try:
            return next(self._parts)
        except StopIteration:
            raise StopAsyncIteration from None


def _split(raw: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``raw`` cut at the given offsets (duplicates give empty chunks)."""
    points = sorted(cuts)
    parts = []
    start = 0
    for point in points:
        parts.append(raw[start:point])
        start = point
    parts.append(raw[start:])
    return parts


def _run(
    reader: Callable[[AsyncIterator[bytes]], AsyncIterator[T]], parts: Sequence[bytes]
) -> list[T]:
    """Run ``reader`` over ``parts`` in a fresh event loop and collect what it yields."""

    async def collect() -> list[T]:
        return [item async for item in reader(_Chunks(parts))]

    return anyio.run(collect)


async def _collect(aiter: AsyncIterator[T]) -> list[T]:
    return [item async for item in aiter]


async def _collect_until_error(aiter: AsyncIterator[T]) -> tuple[list[T], BaseException]:
    items: list[T] = []
    try:
        async for item in aiter:
            items.append(item)
    except Exception as exc:
        return items, exc
    raise AssertionError("no error raised")


# --------------------------------------------------------------------------- NDJSON properties

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
_json_objects = st.dictionaries(
    st.text(max_size=8).filter(lambda key: key != "error"), _json_values, max_size=5
)


@st.composite
def _ndjson_streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[bytes]]:
    objects = draw(st.lists(_json_objects, max_size=8))
    text: list[str] = []
    for obj in objects:
        for _ in range(draw(st.integers(0, 2))):  # blank lines, possibly with spaces
            text.append(
                draw(st.sampled_from(["", " ", "\t"])) + draw(st.sampled_from(["\n", "\r\n"]))
            )
        text.append(json.dumps(obj, ensure_ascii=draw(st.booleans())))
        text.append(draw(st.sampled_from(["\n", "\r\n"])))
    drop_last_line_ending = draw(st.booleans())
    if text and drop_last_line_ending:
        text.pop()
    raw = "".join(text).encode()
    cuts = draw(st.lists(st.integers(0, len(raw)), max_size=25))
    return objects, _split(raw, cuts)


@PROPERTY_SETTINGS
@given(_ndjson_streams())
def test_ndjson_yields_exactly_the_objects_however_the_stream_is_split(
    stream: tuple[list[dict[str, Any]], list[bytes]],
) -> None:
    objects, parts = stream
    assert _run(iter_ndjson, parts) == objects


def test_ndjson_every_split_point_including_inside_crlf_and_utf8() -> None:
    objects: list[dict[str, Any]] = [
        {"content": "héllo €𝄞"},
        {"n": 1, "s": "\u2028"},
        {"done": True},
    ]
    raw = "\r\n".join(json.dumps(o, ensure_ascii=False) for o in objects).encode() + b"\r\n"
    for cut in range(len(raw) + 1):
        assert _run(iter_ndjson, [raw[:cut], raw[cut:]]) == objects, cut
    assert _run(iter_ndjson, [raw[i : i + 1] for i in range(len(raw))]) == objects


# --------------------------------------------------------------------------- SSE properties

_field_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\0"), max_size=10)
_data_text = st.text(st.characters(codec="utf-8", exclude_characters="\r"), max_size=30)
_events = st.tuples(
    st.none() | _field_text.filter(bool),  # event name
    _data_text,  # data, may contain "\n" (several data lines)
    st.none() | _field_text,  # id
    st.booleans(),  # a comment and a retry field before the event
)


@st.composite
def _sse_streams(draw: st.DrawFn) -> tuple[list[SSEEvent], list[bytes]]:
    events = draw(st.lists(_events, max_size=8))
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    bom = draw(st.booleans())
    lines: list[str] = []
    expected: list[SSEEvent] = []
    last_id: str | None = None
    for name, data, event_id, extras in events:
        if extras:
            lines += [": keep-alive", "retry: 1000"]
        if name is not None:
            lines.append("event: " + name)
        if event_id is not None:
            lines.append("id: " + event_id)
            last_id = event_id or None
        lines += [
            "data: " + part if part or draw(st.booleans()) else "data" for part in data.split("\n")
        ]
        lines.append("")
        expected.append(SSEEvent(name, data, last_id))
    raw = (("\ufeff" if bom else "") + "".join(line + eol for line in lines)).encode()
    cuts = draw(st.lists(st.integers(0, len(raw)), max_size=25))
    return expected, _split(raw, cuts)


@PROPERTY_SETTINGS
@given(_sse_streams())
def test_sse_yields_exactly_the_events_however_the_stream_is_split(
    stream: tuple[list[SSEEvent], list[bytes]],
) -> None:
    expected, parts = stream
    assert _run(iter_sse, parts) == expected


@PROPERTY_SETTINGS
@given(st.lists(_json_objects, max_size=8), st.sampled_from(["\n", "\r\n", "\r"]), st.data())
def test_sse_json_yields_exactly_the_objects_however_the_stream_is_split(
    objects: list[dict[str, Any]], eol: str, data: st.DataObject
) -> None:
    text = "".join(f"data: {json.dumps(o, ensure_ascii=False)}{eol}{eol}" for o in objects)
    raw = (text + f"data: [DONE]{eol}{eol}" + f'data: {{"after": 1}}{eol}{eol}').encode()
    parts = _split(raw, data.draw(st.lists(st.integers(0, len(raw)), max_size=25)))
    assert _run(iter_sse_json, parts) == [(None, o) for o in objects]


def test_sse_every_split_point_including_inside_crlf_bom_and_utf8() -> None:
    raw = (
        '\ufeff: ping\r\nevent: message_start\r\nid: 1\r\ndata: {"t":"é€𝄞"}\r\n\r\n'
        "data: a\r\ndata: b\r\n\r\n"
    ).encode()
    expected = [
        SSEEvent("message_start", '{"t":"é€𝄞"}', "1"),
        SSEEvent(None, "a\nb", "1"),
    ]
    for cut in range(len(raw) + 1):
        assert _run(iter_sse, [raw[:cut], raw[cut:]]) == expected, cut
    assert _run(iter_sse, [raw[i : i + 1] for i in range(len(raw))]) == expected


# --------------------------------------------------------------------------- NDJSON units


@pytest.mark.anyio
async def test_ndjson_crlf_blank_lines_and_final_line_without_newline() -> None:
    parts = [b'{"a":1}\r\n\r\n', b"\n   \n", b'{"b":2}\n{"c"', b":3}"]
    assert await _collect(iter_ndjson(_Chunks(parts))) == [{"a": 1}, {"b": 2}, {"c": 3}]


@pytest.mark.anyio
async def test_ndjson_ollama_error_line_mid_stream() -> None:
    parts = [
        b'{"message":{"content":"Hi"},"done":false}\n',
        b'{"error":"an error was encountered while running the model"}\n',
    ]
    items, exc = await _collect_until_error(iter_ndjson(_Chunks(parts), provider="ollama"))
    assert items == [{"message": {"content": "Hi"}, "done": False}]
    assert type(exc) is LLMAPIError
    assert exc.status == 200
    assert exc.provider == "ollama"
    assert "an error was encountered while running the model" in str(exc)
    assert "mid-stream" in str(exc)


@pytest.mark.anyio
async def test_ndjson_error_object_and_null_error() -> None:
    parts = [
        b'{"x":1,"error":null}\n{"error":{"message":"boom","type":"server_error","code":500}}\n'
    ]
    items, exc = await _collect_until_error(iter_ndjson(_Chunks(parts)))
    assert items == [{"x": 1, "error": None}]
    assert isinstance(exc, LLMAPIError)
    assert (exc.status, exc.error_type, exc.code) == (200, "server_error", "500")
    assert "boom" in str(exc)


@pytest.mark.anyio
async def test_ndjson_context_error_mid_stream_is_typed() -> None:
    parts = [b'{"error":"the input length exceeds the context length"}\n']
    _, exc = await _collect_until_error(iter_ndjson(_Chunks(parts)))
    assert isinstance(exc, ContextLengthExceededError)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "line", [b"not json", b"[1, 2]", b'"text"', b"42", b'{"a":1} {"b":2}', b"<html>"]
)
async def test_ndjson_line_that_is_not_a_json_object(line: bytes) -> None:
    items, exc = await _collect_until_error(iter_ndjson(_Chunks([b'{"ok":1}\n', line + b"\n"])))
    assert items == [{"ok": 1}]
    assert type(exc) is MalformedResponseError
    assert exc.status == 200


@pytest.mark.anyio
async def test_ndjson_truncated_final_line() -> None:
    items, exc = await _collect_until_error(iter_ndjson(_Chunks([b'{"a":1}\n{"b":[1,', b"2"])))
    assert items == [{"a": 1}]
    assert isinstance(exc, MalformedResponseError)
    assert "truncated" in str(exc)


@pytest.mark.anyio
async def test_ndjson_invalid_utf8_fails_after_the_good_lines() -> None:
    parts = [b'{"a":1}\n{"b":"\xff"}\n{"c":3}\n']
    items, exc = await _collect_until_error(iter_ndjson(_Chunks(parts)))
    assert items == [{"a": 1}]
    assert isinstance(exc, MalformedResponseError)
    assert "UTF-8" in str(exc)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "parts",
    [
        [b'{"a":"' + b"x" * 50],  # never a newline: the pending buffer is bounded
        [b'{"a":"', b"x" * 30, b"x" * 30],  # growing across chunks
        [b'{"a":"' + b"x" * 100 + b'"}\n'],  # one whole overlong line in a chunk
        [b'{"a":1}\n{"b":"' + b"x" * 80],  # an overlong tail after a good line
    ],
)
async def test_ndjson_overlong_line(parts: list[bytes]) -> None:
    with pytest.raises(MalformedResponseError, match="longer than 40 bytes"):
        await _collect(iter_ndjson(_Chunks(parts), max_line_bytes=40))


@pytest.mark.anyio
async def test_ndjson_line_at_the_limit_is_accepted() -> None:
    line = json.dumps({"a": "x" * 30}).encode()
    got = await _collect(iter_ndjson(_Chunks([line + b"\n", line]), max_line_bytes=len(line)))
    assert got == [{"a": "x" * 30}] * 2


# --------------------------------------------------------------------------- SSE units


@pytest.mark.anyio
async def test_sse_comments_keepalives_retry_and_unknown_fields_are_ignored() -> None:
    raw = b": ping\n\n:\n\nretry: 10\nfoo: bar\ndata: x\n\n: ping - 2024\n\n"
    assert await _collect(iter_sse(_Chunks([raw]))) == [SSEEvent(None, "x", None)]


@pytest.mark.anyio
async def test_sse_field_forms() -> None:
    raw = (
        b"data:no-space\n\n"  # no space after the colon
        b"data:  two spaces\n\n"  # only one space is removed
        b"data\n\n"  # a field without colon has an empty value
        b"event\ndata: e\n\n"  # an empty event name is a plain message
        b"id: 5\ndata: a\n\n"
        b"id: 6\0\ndata: b\n\n"  # an id with NUL is ignored
        b"id\ndata: c\n\n"  # an empty id resets it
        b"event: only-a-name\n\n"  # no data: not dispatched
        b"data: d\n\n"  # and the name does not leak into the next event
    )
    assert await _collect(iter_sse(_Chunks([raw]))) == [
        SSEEvent(None, "no-space", None),
        SSEEvent(None, " two spaces", None),
        SSEEvent(None, "", None),
        SSEEvent(None, "e", None),
        SSEEvent(None, "a", "5"),
        SSEEvent(None, "b", "5"),
        SSEEvent(None, "c", None),
        SSEEvent(None, "d", None),
    ]


@pytest.mark.anyio
async def test_sse_line_endings_cr_crlf_lf_and_incomplete_last_event() -> None:
    raw = b"data: 1\r\rdata: 2\r\n\r\ndata: 3\n\ndata: lost\n"
    assert [e.data for e in await _collect(iter_sse(_Chunks([raw])))] == ["1", "2", "3"]


@pytest.mark.anyio
async def test_sse_cr_at_chunk_end_followed_by_lf() -> None:
    parts = [b"data: 1\r", b"\n", b"\r", b"\ndata: 2\r", b"", b"\r"]
    assert [e.data for e in await _collect(iter_sse(_Chunks(parts)))] == ["1", "2"]


@pytest.mark.anyio
async def test_sse_old_llamacpp_error_line_is_an_error_event() -> None:
    raw = b'error: {"code":500,"message":"slot unavailable","type":"server_error"}\n\n'
    assert await _collect(iter_sse(_Chunks([raw]))) == [
        SSEEvent("error", '{"code":500,"message":"slot unavailable","type":"server_error"}', None)
    ]


@pytest.mark.anyio
async def test_sse_invalid_utf8_is_replaced() -> None:
    assert await _collect(iter_sse(_Chunks([b"data: a\xffb\n\n"]))) == [
        SSEEvent(None, "a\ufffdb", None)
    ]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "parts",
    [
        [b"data: " + b"x" * 100],
        [b"data: ", b"x" * 30, b"x" * 30],
        [b"data: " + b"x" * 100 + b"\n\n"],
        [b"data: " + b"x" * 20 + b"\n"] * 5,  # many short data lines in one event
    ],
)
async def test_sse_overlong_line_or_event(parts: list[bytes]) -> None:
    with pytest.raises(MalformedResponseError, match="longer than 50 bytes"):
        await _collect(iter_sse(_Chunks(parts), max_line_bytes=50))


# --------------------------------------------------------------------------- SSE JSON units


@pytest.mark.anyio
async def test_sse_json_openai_stream_with_pings_and_done() -> None:
    raw = (
        b'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n'
        b": ping\n\n"
        b'data: {"choices":[],"usage":{"prompt_tokens":2}}\n\n'
        b"data: [DONE]\n\n"
        b'data: {"never":"seen"}\n\n'
    )
    assert await _collect(iter_sse_json(_Chunks([raw]))) == [
        (None, {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}),
        (None, {"choices": [], "usage": {"prompt_tokens": 2}}),
    ]


@pytest.mark.anyio
async def test_sse_json_anthropic_event_names_and_empty_data() -> None:
    raw = (
        b'event: message_start\ndata: {"type":"message_start"}\n\n'
        b'event: ping\ndata: {"type": "ping"}\n\n'
        b"event: ping\ndata:\n\n"
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    assert await _collect(iter_sse_json(_Chunks([raw]))) == [
        ("message_start", {"type": "message_start"}),
        ("ping", {"type": "ping"}),
        ("message_stop", {"type": "message_stop"}),
    ]


@pytest.mark.anyio
async def test_sse_json_anthropic_error_event_keeps_error_type() -> None:
    raw = (
        b'event: message_start\ndata: {"type":"message_start"}\n\n'
        b"event: error\n"
        b'data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    items, exc = await _collect_until_error(iter_sse_json(_Chunks([raw]), provider="anthropic"))
    assert items == [("message_start", {"type": "message_start"})]
    assert type(exc) is LLMAPIError
    assert (exc.status, exc.error_type, exc.provider) == (200, "overloaded_error", "anthropic")
    assert "Overloaded" in str(exc)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("raw", "message", "error_type", "code"),
    [
        (  # llama.cpp current
            b'data: {"error":{"code":500,"message":"boom","type":"server_error"}}\n\n',
            "boom",
            "server_error",
            "500",
        ),
        (  # old llama.cpp "error:" line
            b'error: {"code":503,"message":"loading model","type":"unavailable_error"}\n\n',
            "loading model",
            "unavailable_error",
            "503",
        ),
        (b"event: error\ndata: plain text\n\n", "plain text", None, None),
        (b"event: error\ndata:\n\n", "(no details)", None, None),
    ],
)
async def test_sse_json_error_shapes(
    raw: bytes, message: str, error_type: str | None, code: str | None
) -> None:
    items, exc = await _collect_until_error(iter_sse_json(_Chunks([b'data: {"ok":1}\n\n', raw])))
    assert items == [(None, {"ok": 1})]
    assert isinstance(exc, LLMAPIError)
    assert not isinstance(exc, MalformedResponseError)
    assert (exc.status, exc.error_type, exc.code) == (200, error_type, code)
    assert message in str(exc)


@pytest.mark.anyio
@pytest.mark.parametrize("data", [b"{not json", b"[1]", b"null", b'{"a":1} trailing'])
async def test_sse_json_data_that_is_not_a_json_object(data: bytes) -> None:
    with pytest.raises(MalformedResponseError):
        await _collect(iter_sse_json(_Chunks([b"data: " + data + b"\n\n"])))


@pytest.mark.anyio
async def test_sse_json_whitespace_around_json_is_fine() -> None:
    got = await _collect(iter_sse_json(_Chunks([b'data:  {"a": 1} \n\n'])))
    assert got == [(None, {"a": 1})]


# --------------------------------------------------------------------------- error bodies


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{"error":"model \'foo\' not found"}', ErrorDetails(message="model 'foo' not found")),
        (
            '{"error":{"message":"Rate limit exceeded","type":"rate_limit_error","param":null,'
            '"code":"rate_limit_exceeded"}}',
            ErrorDetails(
                message="Rate limit exceeded",
                error_type="rate_limit_error",
                code="rate_limit_exceeded",
            ),
        ),
        (
            '{"error":{"code":400,"message":"request exceeds the available context size",'
            '"type":"exceed_context_size_error"}}',
            ErrorDetails(
                message="request exceeds the available context size",
                error_type="exceed_context_size_error",
                code="400",
            ),
        ),
        (
            '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},'
            '"request_id":"req_1"}',
            ErrorDetails(message="Overloaded", error_type="overloaded_error"),
        ),
        (
            '{"object":"error","message":"bad model","type":"BadRequestError","param":null,'
            '"code":400}',
            ErrorDetails(message="bad model", error_type="BadRequestError", code="400"),
        ),
        ('{"detail":"Not Found"}', ErrorDetails(message="Not Found")),
        (
            "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
            ErrorDetails(message="502 Bad Gateway"),
        ),
        (
            "<!DOCTYPE html><html><body><h1>Oops</h1>\n<p>down</p></body></html>",
            ErrorDetails(message="Oops down"),
        ),
        ("  upstream   timed out\n", ErrorDetails(message="upstream timed out")),
        ("", ErrorDetails(message="(empty response body)")),
        ('{"unexpected": 1}', ErrorDetails(message='{"unexpected":1}')),
        ("[1, 2]", ErrorDetails(message="[1, 2]")),
        ('{"error": {"code": 3}}', ErrorDetails(message='{"code":3}', code="3")),
    ],
)
def test_parse_error_body_shapes(body: str, expected: ErrorDetails) -> None:
    assert parse_error_body(body) == expected
    assert parse_error_body(body.encode()) == expected


def test_parse_error_body_bounds_the_message_and_takes_mappings() -> None:
    assert len(parse_error_body("x" * 10_000).message) <= 500
    assert parse_error_body({"error": "e"}) == ErrorDetails(message="e")


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
@settings(database=None, deadline=None)
def test_parse_error_body_never_raises(body: bytes) -> None:
    assert isinstance(parse_error_body(body).message, str)


@pytest.mark.parametrize(
    ("status", "details", "cls"),
    [
        (401, ErrorDetails(message="invalid api key"), AuthenticationError),
        (403, ErrorDetails(message="forbidden"), AuthenticationError),
        (429, ErrorDetails(message="slow down"), RateLimitError),
        (
            400,
            ErrorDetails(message="x", code="context_length_exceeded"),
            ContextLengthExceededError,
        ),
        (
            400,
            ErrorDetails(message="x", error_type="exceed_context_size_error"),
            ContextLengthExceededError,
        ),
        (
            400,
            ErrorDetails(message="prompt is too long: 210000 tokens > 200000"),
            ContextLengthExceededError,
        ),
        (
            400,
            ErrorDetails(message="This model's maximum context length is 4096 tokens"),
            ContextLengthExceededError,
        ),
        (
            413,
            ErrorDetails(message="input length exceeds the context length"),
            ContextLengthExceededError,
        ),
        (
            413,
            ErrorDetails(message="request too large", error_type="request_too_large"),
            LLMAPIError,
        ),
        (500, ErrorDetails(message="context length bug in server"), LLMAPIError),
        (404, ErrorDetails(message="model 'x' not found"), LLMAPIError),
        (200, ErrorDetails(message="slow down", error_type="rate_limit_error"), RateLimitError),
    ],
)
def test_build_api_error_picks_the_class(status: int, details: ErrorDetails, cls: type) -> None:
    error = build_api_error(status, details, body="b" * 5000, provider="p", url="http://h:1/x")
    assert type(error) is cls
    assert error.status == status
    assert len(error.body) == 2000
    assert details.message in str(error)
    assert "http://h:1/x" in str(error)


def test_build_api_error_rate_limit_mentions_retry_after() -> None:
    error = build_api_error(429, ErrorDetails(message="slow"), retry_after=12.5)
    assert isinstance(error, RateLimitError)
    assert error.retry_after == 12.5
    assert "12.5" in str(error)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("reader", "chunk"),
    [(iter_ndjson, b'{"a":1}\n{"b":2}\n'), (iter_sse, b"data: 1\n\ndata: 2\n\n"),
     (iter_sse_json, b'data: {"a":1}\n\ndata: {"b":2}\n\n')],
)  # fmt: skip
async def test_readers_can_be_closed_early(reader: Callable[..., Any], chunk: bytes) -> None:
    source = _Chunks([chunk] * 3)
    async with contextlib.aclosing(reader(source)) as items:
        async for _ in items:
            break
    assert [item async for item in items] == []
    assert await source.__anext__()  # the source is the caller's: still open


@pytest.mark.anyio
async def test_sse_one_event_per_chunk_mixed_with_partial_state() -> None:
    parts = [
        b"event: a\n", b"data: 1\n\n",  # the name comes in an earlier chunk
        b"data: 2\n", b"\n",
        b"id: 9\n", b"data: 3\n\n",
        b"data: 4\r", b"\n\r\n", b"data: 5\n\n",  # a CRLF split across chunks
        b"data: x", b"y\n\n",
        b"data: 6\n\n",
    ]  # fmt: skip
    assert await _collect(iter_sse(_Chunks(parts))) == [
        SSEEvent("a", "1", None),
        SSEEvent(None, "2", None),
        SSEEvent(None, "3", "9"),
        SSEEvent(None, "4", "9"),
        SSEEvent(None, "5", "9"),
        SSEEvent(None, "xy", "9"),
        SSEEvent(None, "6", "9"),
    ]
    json_parts = [b'data: {"a":1}\n\n', b"event: x\n", b'data: {"b":2}\n\n', b"data: [DONE]\n\n"]
    assert await _collect(iter_sse_json(_Chunks([*json_parts, b'data: {"c":3}\n\n']))) == [
        (None, {"a": 1}),
        ("x", {"b": 2}),
    ]
