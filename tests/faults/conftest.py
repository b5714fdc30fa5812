"""Fixtures of the fault corpus."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llmfactory import LLMFactory
from llmfactory.config import Settings


@pytest.fixture(scope="module")
def corpus_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMFactory]:
    """One in-memory factory (catalogue seeded, no discovery) for a whole module.

    Seeding the catalogue costs tens of milliseconds; the corpus builds hundreds
    of conversations. Its settings come from an empty home of its own, never
    from the environment of the machine.
    """
    home = tmp_path_factory.mktemp("corpus-home")
    settings = Settings.load({"LLMFACTORY_HOME": str(home)})
    factory = LLMFactory(database_url="sqlite://", settings=settings, discover=False)
    factory.ensure_initialized()
    yield factory
    factory.close()
