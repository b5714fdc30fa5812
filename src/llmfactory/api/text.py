"""Raw text completion (``BaseLLM.complete_text`` / ``stream_text``): what every protocol shares.

A text completion sends a prompt as it is — no chat template, no system
prompt, no history — and returns its continuation. It runs through the same
pipeline as a chat call (extensions, usage tracking) on a
:class:`~llmfactory.base_llm.Call` whose ``operation`` is ``text_completion``
and whose ``messages`` hold the prompt as one user message (so that
extensions that read or rewrite messages work unchanged).

Protocols that have it set ``supports_text_completion`` and implement
``_complete_text`` / ``_stream_text``: Ollama's ``/api/generate``
(:mod:`llmfactory.api.ollama_text`) and the OpenAI-compatible ``/v1/completions``
(:mod:`llmfactory.api.openai_text`). Anthropic's Messages API has none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmfactory.errors import NotSupportedError
from llmfactory.messages import Role

if TYPE_CHECKING:
    from llmfactory.base_llm import BaseLLM, Call

__all__ = ["OPERATION", "ensure_supported", "prompt_of", "system_of", "unsupported"]

OPERATION = "text_completion"
"""``Call.operation`` of a text completion (the GenAI semantic conventions' name)."""


def unsupported(llm: BaseLLM, why: str = "") -> NotSupportedError:
    """The error for a text completion ``llm`` cannot make."""
    reason = why or (
        f"the {llm.provider} protocol ({type(llm).__name__}) has no raw text completion"
    )
    return NotSupportedError(
        f"{llm.identifier} cannot do text completion: {reason}; use send_user_message() or "
        "complete() (chat) instead, or a model served by Ollama (/api/generate) or an "
        "OpenAI-compatible server with /v1/completions (LM Studio, llama.cpp, vLLM)",
        operation=OPERATION,
        provider=llm.provider,
    )


def ensure_supported(llm: BaseLLM) -> None:
    """Raise :class:`~llmfactory.errors.NotSupportedError` unless ``llm`` can complete text.

    The protocol must have it; a cloud model must also be known to offer it
    (the ``completion`` capability: OpenAI serves ``/v1/completions`` only for
    a few legacy models). A model served by a runtime is trusted to: the
    server answers with an error if it does not.
    """
    if not type(llm).supports_text_completion:
        raise unsupported(llm)
    model = llm.model
    if not model.is_local and not model.has_capability("completion"):
        raise unsupported(
            llm,
            f"the cloud model {model.name!r} is not known to offer text completion (give it "
            "the 'completion' capability with register_model(..., capabilities=[...]) if "
            "it does)",
        )


def prompt_of(call: Call) -> str:
    """The prompt of a text-completion call: its non-system messages' text, in order."""
    texts = [m.content for m in call.messages if m.role is not Role.SYSTEM]
    return "\n\n".join(texts)


def system_of(call: Call) -> str | None:
    """A system text an extension added to a text-completion call, if any."""
    texts = [m.content for m in call.messages if m.role is Role.SYSTEM and m.content]
    return "\n\n".join(texts) or None
