"""RateLimitExtension: token buckets per key, waiting by default, refusing when told,
token budgets corrected to what calls used, shared across conversations and event loops."""

from __future__ import annotations

import time

import anyio
import pytest

from llmfactory import LLMConfig, LLMFactory, Usage
from llmfactory.extensions import RateLimitExceeded, RateLimitExtension
from tests.api.chat_support import clients  # noqa: F401  (clients: a fixture)
from tests.extensions import ScriptedLLM, fake_model
from tests.servers import OllamaServer

pytestmark = pytest.mark.anyio


async def test_requests_wait_for_room() -> None:
    limiter = RateLimitExtension(requests_per_minute=2, window=1.0)  # 2 per second
    llm = ScriptedLLM()
    llm.register_extension(limiter)
    start = time.monotonic()
    await llm.complete([{"role": "user", "content": "1"}])
    await llm.complete([{"role": "user", "content": "2"}])
    assert time.monotonic() - start < 0.4  # the burst passes at once
    await llm.complete([{"role": "user", "content": "3"}])
    assert time.monotonic() - start >= 0.45  # the third waited for the bucket (0.5 s)


async def test_concurrent_calls_share_the_budget() -> None:
    limiter = RateLimitExtension(requests_per_minute=3, window=1.5, per="global")  # 2/s
    llms = [ScriptedLLM(model=fake_model(identifier=f"m{i}:fake@h:1")) for i in range(2)]
    for llm in llms:
        llm.register_extension(limiter)
    done: list[float] = []
    start = time.monotonic()

    async def one(i: int) -> None:
        await llms[i % 2].complete([{"role": "user", "content": str(i)}])
        done.append(time.monotonic() - start)

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(one, i)
    done.sort()
    assert len(done) == 5 and done[2] < 0.4 and done[3] >= 0.45 and done[4] >= 0.95


@pytest.mark.usefixtures("clients")
async def test_refusal_instead_of_waiting_sends_nothing(
    factory: LLMFactory, ollama_server: OllamaServer
) -> None:
    llm = factory.create_llm(f"llama3.2:ollama@{ollama_server.host}")
    llm.register_extension(RateLimitExtension(requests_per_minute=1, wait=False))
    await llm.send_user_message("first")
    with pytest.raises(RateLimitExceeded) as info:
        await llm.send_user_message("second")
    assert ollama_server.count("/api/chat") == 1 and len(llm.messages) == 2
    assert 50 < info.value.retry_after <= 60 and info.value.key == llm.identifier
    assert info.value.extension == "rate_limit"
    limited = RateLimitExtension(requests_per_minute=1, max_wait=0.05)
    other = factory.create_llm(f"llama3.2:ollama@{ollama_server.host}")
    other.register_extension(limited)
    await other.send_user_message("first")
    with pytest.raises(RateLimitExceeded, match="1 requests per minute per model"):
        await other.send_user_message("second")


async def test_token_budget_is_corrected_to_the_reported_usage() -> None:
    now = [0.0]
    limiter = RateLimitExtension(tokens_per_minute=1000, clock=lambda: now[0], wait=False)
    llm = ScriptedLLM(usage=Usage(prompt_tokens=600, completion_tokens=100))
    llm.register_extension(limiter)
    await llm.complete([{"role": "user", "content": "x" * 40}], max_tokens=50)  # 10 + 50 → 700
    (bucket,) = [b for _, b in limiter._buckets.values()]
    assert bucket is not None and bucket.level == pytest.approx(300)
    second = [{"role": "user", "content": "y" * 40}]
    with pytest.raises(RateLimitExceeded):  # 400 tokens asked, 300 left
        await llm.complete(second, max_tokens=390)
    now[0] = 6.0  # 100 tokens refilled
    await llm.complete(second, max_tokens=390)
    assert bucket.level == pytest.approx(-300)  # 400 taken, 700 used: in debt
    with pytest.raises(RateLimitExceeded, match="retry in 18"):  # 300 of debt, 10 wanted
        await llm.complete([{"role": "user", "content": "z"}])


def test_sync_facade_and_arguments() -> None:
    llm = ScriptedLLM(LLMConfig())
    llm.register_extension(RateLimitExtension(requests_per_minute=1, window=0.3))
    start = time.monotonic()
    llm.send_user_message_sync("a")
    llm.send_user_message_sync("b")  # on the portal's loop: waits too
    assert time.monotonic() - start >= 0.2
    llm.close()
    with pytest.raises(ValueError, match="per must be"):
        RateLimitExtension(per="planet")
    with pytest.raises(ValueError, match="requests_per_minute must be > 0"):
        RateLimitExtension(requests_per_minute=0)
