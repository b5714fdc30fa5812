"""Replica grouping for ``llmfactory models`` (``replica_group``/``replicas`` fields, ``--group``).

No commands live here: ``models`` (in :mod:`llmfactory.cli.catalog`) calls these helpers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmfactory.factory import LLMFactory
    from llmfactory.registry.groups import ReplicaGroup
    from llmfactory.registry.models import LLMModel

__all__ = ["grouped_rows", "model_dicts", "replica_column"]


def _groups(factory: LLMFactory) -> dict[str, ReplicaGroup]:
    from llmfactory.registry.groups import replica_groups

    return replica_groups(factory.list_models())  # all of them: filters must not split groups


def model_dicts(factory: LLMFactory, models: Sequence[LLMModel]) -> list[dict[str, Any]]:
    """``LLMModel.to_dict()`` of each model plus ``replica_group`` (the ``name:runtime@any``
    identifier of its logical model; None for a cloud model) and ``replicas`` (every
    identifier of that group when several hosts serve it, else empty)."""
    groups = _groups(factory)
    result = []
    for model in models:
        data = model.to_dict()
        group = groups.get(model.identifier)
        data["replica_group"] = group.identifier if group is not None else None
        data["replicas"] = group.identifiers if group is not None and len(group) > 1 else []
        result.append(data)
    return result


def replica_column(factory: LLMFactory, models: Sequence[LLMModel]) -> list[str] | None:
    """The table's ``replicas`` column (a count where there are several), or None when
    no listed model has replicas."""
    groups = _groups(factory)
    counts = [len(groups[m.identifier]) if m.identifier in groups else 1 for m in models]
    if all(c < 2 for c in counts):
        return None
    return [str(c) if c > 1 else "" for c in counts]


def grouped_rows(factory: LLMFactory, models: Sequence[LLMModel]) -> list[dict[str, Any]]:
    """One entry per logical model among ``models`` (cloud models stay as they are).

    Each entry: ``id`` (``name:runtime@any`` for a served model, what ``create_llm``
    takes), ``name``, ``provider``, ``runtime``, ``context_length`` (the largest),
    ``capabilities`` (those every listed replica has), prices, ``available`` (a
    replica is), ``replica_group``, ``replicas`` (the listed identifiers) and
    ``hosts``.
    """
    groups = _groups(factory)
    entries: dict[str, dict[str, Any]] = {}
    members: dict[str, list[LLMModel]] = {}
    for model in models:
        group = groups.get(model.identifier)
        key = group.identifier if group is not None else model.identifier
        members.setdefault(key, []).append(model)
    for key, found in members.items():
        first = found[0]
        served = first.host is not None
        caps = set(first.capabilities)
        for model in found[1:]:
            caps &= set(model.capabilities)
        contexts = [m.context_length for m in found if m.context_length is not None]
        entries[key] = {
            "id": key,
            "name": key.rsplit("@", 1)[0].rsplit(":", 1)[0] if served else first.name,
            "provider": first.provider,
            "runtime": first.runtime,
            "context_length": max(contexts) if contexts else None,
            "capabilities": sorted(caps, key=first.capabilities.index),
            "pricing": first.to_dict()["pricing"],
            "available": any(m.available for m in found),
            "replica_group": key if served else None,
            "replicas": [m.identifier for m in found] if served else [],
            "hosts": [m.host for m in found if m.host is not None],
        }
    return list(entries.values())
