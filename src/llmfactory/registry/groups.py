"""Replica groups: the records of one logical model served by several hosts.

Two served records are **replicas** when the same runtime serves them and
they have the same name (for Ollama a name without a tag means ``:latest``)
or the same digest (Ollama reports one for every model: the same weights
under another tag or on another box); joining is transitive. Cloud models
are never replicas. A group is named ``name:runtime@any``, with the group's
most common name, which is what ``create_llm`` takes to talk to whichever
replica is available (:mod:`llmfactory.replicas`).

Pure functions over records: no I/O, no factory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmfactory.errors import AmbiguousModelError, ModelNotFoundError

if TYPE_CHECKING:
    from llmfactory.identifiers import ModelIdentifier
    from llmfactory.registry.models import LLMModel

__all__ = [
    "ANY_HOST",
    "ReplicaGroup",
    "group_for_any",
    "group_for_candidates",
    "group_models",
    "group_name",
    "is_any_host",
    "name_key",
    "record_for_any",
    "replica_groups",
]

ANY_HOST = "any"
"""The host name that means "any host serving the model": ``name:runtime@any``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaGroup:
    """The registry records of one logical model: same runtime, and the same name or digest.

    ``identifier`` is ``name:runtime@any`` with the group's most common name (ties:
    a ``:latest`` tag, then alphabetical order); ``models`` are the records
    (ordered by identifier).
    """

    identifier: str
    name: str
    runtime: str
    models: tuple[LLMModel, ...]

    @property
    def identifiers(self) -> list[str]:
        """The members' identifiers."""
        return [m.identifier for m in self.models]

    def __len__(self) -> int:
        return len(self.models)


def name_key(model: LLMModel) -> str:
    """A record's name as its runtime reads it (Ollama: ``llama3`` is ``llama3:latest``)."""
    return _normalized(model.runtime, model.name)


def _normalized(runtime: str, name: str) -> str:
    if runtime == "ollama" and ":" not in name.rsplit("/", 1)[-1]:
        return f"{name}:latest"
    return name


def group_name(counts: Counter[str]) -> str:
    """The most common name; ties go to a ``:latest`` tag, then to alphabetical order."""
    return min(counts, key=lambda n: (-counts[n], not n.endswith(":latest"), n))


def group_models(models: Iterable[LLMModel]) -> list[ReplicaGroup]:
    """Group served models into logical models (cloud models are left out).

    Groups come in the order of their first member in ``models``.
    """
    served = [m for m in models if m.host is not None]
    parent = list(range(len(served)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_by: dict[tuple[str, str, str], int] = {}
    for i, model in enumerate(served):
        keys = [("name", model.runtime, name_key(model))]
        if model.digest:
            keys.append(("digest", model.runtime, model.digest))
        for key in keys:
            j = first_by.setdefault(key, i)
            if j != i:
                a, b = find(i), find(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    members: dict[int, list[LLMModel]] = {}
    for i, model in enumerate(served):
        members.setdefault(find(i), []).append(model)
    groups = []
    for root in sorted(members):
        found = sorted(members[root], key=lambda m: m.identifier)
        name = group_name(Counter(name_key(m) for m in found))
        runtime = found[0].runtime
        groups.append(ReplicaGroup(identifier=f"{name}:{runtime}@{ANY_HOST}", name=name,
                                   runtime=runtime, models=tuple(found)))
    return groups


def replica_groups(models: Iterable[LLMModel]) -> dict[str, ReplicaGroup]:
    """Each served model's :class:`ReplicaGroup`, by identifier."""
    return {m.identifier: g for g in group_models(models) for m in g.models}


def is_any_host(parsed: ModelIdentifier) -> bool:
    """Whether an identifier names the wildcard host (``name:runtime@any``)."""
    return parsed.host is not None and parsed.host.rsplit(":", 1)[0] == ANY_HOST


def group_for_any(
    models: Iterable[LLMModel],
    parsed: ModelIdentifier,
    text: str,
    suggest: Callable[[str], list[str]] = lambda _text: [],
) -> ReplicaGroup:
    """The group serving ``name:runtime@any`` among ``models``.

    Raises:
        ModelNotFoundError: no host is known to serve that name on that runtime.
    """
    runtime = parsed.runtime or ""
    wanted = _normalized(runtime, parsed.model)
    for group in group_models(m for m in models if m.runtime == runtime):
        if any(name_key(m) == wanted for m in group.models):
            return group
    raise ModelNotFoundError(
        text,
        suggest(parsed.model),
        hint=f" (no {runtime} host is known to serve {parsed.model!r}; run "
        "`llmfactory discover` or `llmfactory hosts add` first)",
    )


def record_for_any(
    models: Iterable[LLMModel],
    parsed: ModelIdentifier,
    text: str,
    suggest: Callable[[str], list[str]] = lambda _text: [],
) -> LLMModel:
    """``get_model("name:runtime@any")``: the one record when one host serves it.

    Raises:
        AmbiguousModelError: several hosts do (``create_llm`` makes a replica set of them).
        ModelNotFoundError: none does.
    """
    group = group_for_any(models, parsed, text, suggest)
    if len(group) > 1:
        raise AmbiguousModelError(text, group.identifiers)
    return group.models[0]


def group_for_candidates(
    models: Iterable[LLMModel], candidates: Sequence[str]
) -> ReplicaGroup | None:
    """The group of an ambiguous name's matches when they are all replicas of one model."""
    known = list(models)
    by_id = {m.identifier: m for m in known}
    found = [by_id.get(c) for c in candidates]
    if not found or any(m is None or m.host is None for m in found):
        return None
    runtimes = {m.runtime for m in found if m is not None}
    if len(runtimes) != 1:
        return None
    runtime = runtimes.pop()
    wanted = set(candidates)
    for group in group_models(m for m in known if m.runtime == runtime):
        if wanted <= set(group.identifiers):
            return group
    return None
