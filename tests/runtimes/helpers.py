"""Helpers shared by the runtime tests."""

from __future__ import annotations

from collections.abc import Mapping

from llmfactory.registry.models import LLMModel
from llmfactory.runtimes.discovery import HostOutcome, ProbeOptions, probe_hosts
from llmfactory.runtimes.hosts import host_from_url


async def probe_one(
    runtime: str,
    url: str,
    *,
    known: Mapping[str, LLMModel] | None = None,
    env: Mapping[str, str] | None = None,
    deadline: float = 5.0,
    connect_timeout: float = 0.5,
) -> HostOutcome:
    """Probe one host and return its outcome."""
    host = host_from_url(runtime, url)
    outcomes, _ = await probe_hosts(
        [host],
        ProbeOptions(deadline=deadline, connect_timeout=connect_timeout),
        known=known,
        env=env,
    )
    assert len(outcomes) == 1
    return outcomes[0]


def models_by_name(outcome: HostOutcome) -> dict[str, LLMModel]:
    """The outcome's models by name (the host must have answered)."""
    assert outcome.result is not None, outcome.report.error
    return {m.name: m for m in outcome.result.models}
