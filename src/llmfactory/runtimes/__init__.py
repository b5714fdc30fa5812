"""Where models are found: runtimes, the hosts they listen on, discovery.

* :mod:`~llmfactory.runtimes.base` — the :class:`~llmfactory.runtimes.base.Runtime`
  plugin interface, :class:`~llmfactory.runtimes.base.Host`,
  :class:`~llmfactory.runtimes.base.ProbeResult` and the registry of runtimes
  (built-ins plus the ``llmfactory.runtimes`` entry-point group);
* :mod:`~llmfactory.runtimes.ollama`, :mod:`~llmfactory.runtimes.lmstudio`,
  :mod:`~llmfactory.runtimes.openai_compatible` — the built-in runtimes;
* :mod:`~llmfactory.runtimes.hosts` — where to look (defaults, env, config, code);
* :mod:`~llmfactory.runtimes.mdns` — DNS-SD browsing and announcing on the LAN;
* :mod:`~llmfactory.runtimes.discovery` — probe every host concurrently and
  reconcile what was found into the registry.

This package never imports :mod:`llmfactory.api` (and vice versa). Importing
it is cheap: nothing here imports httpx, zeroconf or the registry until used.
"""

from __future__ import annotations

__all__: list[str] = []
