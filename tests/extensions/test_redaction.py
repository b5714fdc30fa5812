"""RedactionExtension: e-mail addresses, phone numbers and keys never leave the process;
the history keeps them; replies are restored when asked, streamed ones too."""

from __future__ import annotations

import pytest

from llmfactory import LLMFactory, Message, ToolCall
from llmfactory.extensions import RedactionExtension
from tests.api.chat_support import clients, collect  # noqa: F401  (clients: a fixture)
from tests.extensions import ScriptedLLM
from tests.servers import OllamaServer

SECRET = "sk-proj-abcdefghijklmnop1234567890"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail jane.doe+x@example.co.uk now", "mail [EMAIL_1] now"),
        ("call +44 20 7946 0958 or (555) 123-4567", "call [PHONE_1] or [PHONE_2]"),
        (f"key {SECRET}, again {SECRET}", "key [API_KEY_1], again [API_KEY_1]"),
        ("Authorization: Bearer abcdef0123456789abcdef", "Authorization: Bearer [API_KEY_1]"),
        ("AKIAABCDEFGHIJKLMNOP and ghp_abcdefghijklmnopqrstuvwxyz0123",
         "[API_KEY_1] and [API_KEY_2]"),
        ("on 2025-01-31, version 1.2.3, 12345678, 1234567890123, room 42", None),  # alone
        ("+4915112345678 and 0151-1234-5678", "[PHONE_1] and [PHONE_2]"),
        ("token 4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a", "token [API_KEY_1]"),
    ],
)
def test_patterns(text: str, expected: str | None) -> None:
    redactor = RedactionExtension()
    mapping: dict[str, str] = {}
    redacted = redactor.redact(text, mapping)
    assert redacted == (text if expected is None else expected)
    assert RedactionExtension.unredact(redacted, mapping) == text


def test_custom_patterns_and_switches() -> None:
    redactor = RedactionExtension(emails=False, patterns={"iban": r"\bDE\d{20}\b"})
    assert redactor.redact("a@b.io DE89370400440532013000") == "a@b.io [IBAN_1]"


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_nothing_personal_reaches_the_server_and_the_history_keeps_it(
    factory: LLMFactory, ollama_server: OllamaServer
) -> None:
    factory.register_extension(RedactionExtension)
    llm = factory.create_llm(f"llama3.2:ollama@{ollama_server.host}")
    llm.configure_system_prompt("Support agent for bob@corp.example")
    ollama_server.script_reply("Noted, I wrote to [EMAIL_2].")
    reply = await llm.send_user_message(f"I am jane@example.com, my key is {SECRET}")
    sent = ollama_server.requests_to("/api/chat")[0].json["messages"]
    assert [m["content"] for m in sent] == [
        "Support agent for [EMAIL_1]", "I am [EMAIL_2], my key is [API_KEY_1]"]
    assert reply.content == "Noted, I wrote to [EMAIL_2]."  # no restore by default
    assert SECRET in llm.messages[1].content
    assert not llm._wants_chunks()  # without restore: no on_chunk hook


@pytest.mark.anyio
async def test_restore_puts_the_values_back_in_replies_and_streams() -> None:
    llm = ScriptedLLM(reply="Dear [EMAIL_1], call [PHONE_1] or [UNKNOWN_9].")
    llm.register_extension(RedactionExtension(restore=True))
    question = "From ann@site.org, phone +1 415 555 0100"
    response = await llm.send_user_message(question)
    assert response.content == "Dear ann@site.org, call +1 415 555 0100 or [UNKNOWN_9]."
    assert llm.sent[0].messages[-1].content == "From [EMAIL_1], phone [PHONE_1]"
    assert llm._wants_chunks()
    text, chunks = await collect(llm.stream_user_message(question))
    assert text == "Dear ann@site.org, call +1 415 555 0100 or [UNKNOWN_9]."
    assert chunks[-1].response is not None and chunks[-1].response.content == text
    assert llm.messages[-1].content == text


@pytest.mark.anyio
async def test_placeholders_split_across_chunks_are_restored() -> None:
    llm = ScriptedLLM(reply="x")
    redactor = RedactionExtension(restore=True)
    llm.register_extension(redactor)

    async def pieces() -> list[str]:
        from llmfactory.base_llm import Call

        call = Call(llm=llm, messages=[Message.user("me: a@b.io")], config=llm.config)
        redactor.before_invoke(call)
        out = []
        from llmfactory import ChunkResponse

        for piece in ("Hi [EM", "AIL_", "1] and [x", "] bye [EMA"):
            got = redactor.on_chunk(call, ChunkResponse.delta(piece))
            out.append(piece if got is None else got.content)
        last = redactor.on_chunk(call, ChunkResponse(is_complete=True))
        out.append("" if last is None else last.content)
        return out

    out = await pieces()
    assert "".join(out) == "Hi a@b.io and [x] bye [EMA"
    assert out[0] == "Hi " and out[1] == ""


def test_tool_call_arguments_are_redacted_and_restored() -> None:
    redactor = RedactionExtension()
    mapping: dict[str, str] = {}
    message = Message.assistant(
        "", tool_calls=[ToolCall(id="1", name="send", arguments={"to": ["x@y.io"], "n": 3})])
    redacted = redactor._redact_message(message, mapping)
    assert dict(redacted.tool_calls[0].arguments) == {"to": ["[EMAIL_1]"], "n": 3}
    assert redactor._restore_value(dict(redacted.tool_calls[0].arguments), mapping) == {
        "to": ["x@y.io"], "n": 3}
