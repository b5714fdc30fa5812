"""The ``mock`` runtime: scripted models "served" at ``local``, without any network.

Registered like every built-in runtime (the ``llmfactory.runtimes`` entry
points), so discovery, ``llmfactory discover`` and on-demand probes of an
identifier such as ``echo:mock@local`` see its models: ``echo`` and every
model name with a shared script (:func:`llmfactory.mock.mock_script`). Its
``requires_network`` is false: discovery calls :meth:`MockRuntime.probe`
without connecting anywhere first. The conversations are
:class:`~llmfactory.api.mock.MockLLM` objects.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

from llmfactory.mock import MOCK_CAPABILITIES, MOCK_PORT, MOCK_RUNTIME, mock_model_names
from llmfactory.runtimes.base import Host, ProbeResult, discovered_model

if TYPE_CHECKING:
    from llmfactory.runtimes.http import ProbeClient

__all__ = ["MockRuntime"]


class MockRuntime:
    """The runtime of scripted test models (``model:mock@local``); nothing listens anywhere."""

    name = MOCK_RUNTIME
    default_port = MOCK_PORT
    env_var: str | None = None
    service_type: str | None = None
    requires_network = False

    async def probe(self, client: ProbeClient, host: Host) -> ProbeResult:
        """The mock models, as if ``host`` served them (the client is never used)."""
        now = datetime.now(timezone.utc)
        models = tuple(
            discovered_model(host, name, now=now, capabilities=MOCK_CAPABILITIES)
            for name in mock_model_names()
        )
        return ProbeResult(runtime=self.name, version="mock", models=models, api="mock")
