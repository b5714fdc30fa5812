"""RedactionExtension: personal data and secrets replaced before a request leaves the process.

In ``before_invoke`` every message of the call (the system prompt, the
history, tool results and tool-call arguments) is scanned, and each match is
replaced by a numbered placeholder: ``[EMAIL_1]``, ``[PHONE_1]``,
``[API_KEY_1]``, or ``[<NAME>_1]`` for your own patterns. The same value gets
the same placeholder throughout the call. Only the copy that is sent is
changed: the conversation's history keeps the original text (and is
redacted again on every call).

Built-in patterns (each can be switched off):

* ``emails`` — ``local@domain.tld``;
* ``phones`` — international or national numbers of 9 to 15 digits written
  with a ``+`` country code, brackets, spaces, dots or dashes (ISO dates,
  shorter numbers and bare runs of digits are left alone);
* ``api_keys`` — well-known key shapes (``sk-…``, ``sk-ant-…``, ``ghp_…``,
  ``github_pat_…``, ``AKIA…``, ``AIza…``, ``xox?-…``, ``Bearer …``) and long
  random-looking tokens (32+ letters and digits, both present).

With ``restore=True`` the placeholders in the reply are put back to the
original values: in the final response (content, reasoning and tool-call
arguments) and, for streamed calls, in the chunks as they pass — a chunk that
ends with what may be the start of a placeholder is held back until the next
one shows whether it is. Without ``restore`` the extension has no
``on_chunk`` hook and costs nothing per chunk.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from llmfactory.extensions.base import LLMExtension
from llmfactory.messages import ChunkResponse, Message, ToolCall

if TYPE_CHECKING:
    from llmfactory.base_llm import Call
    from llmfactory.messages import CompleteResponse

__all__ = ["API_KEY_PATTERN", "EMAIL_PATTERN", "PHONE_PATTERN", "RedactionExtension"]

_MAP_KEY = "llmfactory.redaction"
_BUFFER_KEY = "llmfactory.redaction.buffer"

EMAIL_PATTERN = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
)
"""E-mail addresses."""

PHONE_PATTERN = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,5}(?![\w])"
)
"""Phone-number candidates (a match counts when it has 9 to 15 digits and is not a date)."""

API_KEY_PATTERN = re.compile(
    r"\bsk-(?:proj-|ant-(?:api\d+-)?)?[A-Za-z0-9_\-]{16,}"
    r"|\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}"
    r"|\bgithub_pat_[A-Za-z0-9_]{20,}"
    r"|\bAKIA[0-9A-Z]{16}\b"
    r"|\bAIza[0-9A-Za-z_\-]{35}"
    r"|\bxox[abposr]-[A-Za-z0-9\-]{10,}"
    r"|(?<=[Bb]earer )[A-Za-z0-9._~+/\-]{16,}=*"
    r"|(?<![A-Za-z0-9_\-])(?=[A-Za-z0-9_\-]*\d)(?=[A-Za-z0-9_\-]*[A-Za-z])[A-Za-z0-9_\-]{32,}"
    r"(?![A-Za-z0-9_\-])"
)
"""API keys, tokens and other secret-looking strings."""

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_PLACEHOLDER_PREFIX = re.compile(r"\[[A-Z0-9_]*$")


def _phone_ok(match: re.Match[str]) -> bool:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    if not 9 <= digits <= 15 or _DATE.match(text):
        return False
    # a bare run of digits is more often a quantity than a phone number
    return text[0] in "+(" or any(c in " .-" for c in text)


class RedactionExtension(LLMExtension):
    """Replaces e-mail addresses, phone numbers and API-key-like strings before sending.

    ``patterns`` adds your own: a mapping of a label (``"IBAN"``) to a regular
    expression, giving placeholders ``[IBAN_1]``, …; they run after the
    built-ins. ``restore`` puts the original values back into the reply.
    """

    name = "redaction"

    def __init__(
        self,
        *,
        emails: bool = True,
        phones: bool = True,
        api_keys: bool = True,
        patterns: Mapping[str, str | re.Pattern[str]] | None = None,
        restore: bool = False,
    ) -> None:
        rules: list[tuple[str, re.Pattern[str]]] = []
        if api_keys:
            rules.append(("API_KEY", API_KEY_PATTERN))
        if emails:
            rules.append(("EMAIL", EMAIL_PATTERN))
        if phones:
            rules.append(("PHONE", PHONE_PATTERN))
        for label, pattern in (patterns or {}).items():
            clean = re.sub(r"[^A-Z0-9_]", "_", label.upper())
            rules.append((clean, re.compile(pattern) if isinstance(pattern, str) else pattern))
        self.rules = tuple(rules)
        self.restore = restore
        if not restore:
            # No on_chunk hook at all, so that streaming pays nothing for this extension.
            self.on_chunk = None  # type: ignore[assignment]

    # -- redacting -----------------------------------------------------------------

    def redact(self, text: str, mapping: dict[str, str] | None = None) -> str:
        """``text`` with every match replaced by its placeholder; ``mapping`` collects
        placeholder → original (pass the same dict to number consistently)."""
        if mapping is None:
            mapping = {}
        reverse = {original: placeholder for placeholder, original in mapping.items()}
        for label, pattern in self.rules:

            def substitute(
                match: re.Match[str], label: str = label, pattern: re.Pattern[str] = pattern
            ) -> str:
                if pattern is PHONE_PATTERN and not _phone_ok(match):
                    return match.group(0)
                original = match.group(0)
                placeholder = reverse.get(original)
                if placeholder is None:
                    count = sum(1 for p in mapping if p.startswith(f"[{label}_")) + 1
                    placeholder = f"[{label}_{count}]"
                    mapping[placeholder] = original
                    reverse[original] = placeholder
                return placeholder

            text = pattern.sub(substitute, text)
        return text

    def _redact_value(self, value: Any, mapping: dict[str, str]) -> Any:
        if isinstance(value, str):
            return self.redact(value, mapping)
        if isinstance(value, list):
            return [self._redact_value(v, mapping) for v in value]
        if isinstance(value, dict):
            return {k: self._redact_value(v, mapping) for k, v in value.items()}
        return value

    def _redact_message(self, message: Message, mapping: dict[str, str]) -> Message:
        content = self.redact(message.content, mapping) if message.content else message.content
        calls = message.tool_calls
        if calls:
            calls = tuple(
                replace(
                    c,
                    arguments=self._redact_value(dict(c.arguments), mapping),
                    raw_arguments=self.redact(c.raw_arguments, mapping)
                    if c.raw_arguments
                    else c.raw_arguments,
                )
                for c in calls
            )
        if content == message.content and calls == message.tool_calls:
            return message
        return replace(message, content=content, tool_calls=calls)

    def before_invoke(self, call: Call) -> None:
        """Redact every message the call will send."""
        mapping: dict[str, str] = {}
        call.messages = [self._redact_message(m, mapping) for m in call.messages]
        if mapping:
            call.metadata[_MAP_KEY] = mapping

    # -- restoring -----------------------------------------------------------------

    @staticmethod
    def unredact(text: str, mapping: Mapping[str, str]) -> str:
        """``text`` with the placeholders of ``mapping`` replaced by the original values."""
        if not mapping or "[" not in text:
            return text
        return re.sub(r"\[[A-Z0-9_]+_\d+\]", lambda m: mapping.get(m.group(0), m.group(0)), text)

    def _restore_value(self, value: Any, mapping: Mapping[str, str]) -> Any:
        if isinstance(value, str):
            return self.unredact(value, mapping)
        if isinstance(value, list):
            return [self._restore_value(v, mapping) for v in value]
        if isinstance(value, dict):
            return {k: self._restore_value(v, mapping) for k, v in value.items()}
        return value

    def after_invoke(self, call: Call, response: CompleteResponse) -> CompleteResponse | None:
        """With ``restore``, put the original values back into the reply."""
        mapping = call.metadata.get(_MAP_KEY)
        if not self.restore or not mapping:
            return None
        calls = tuple(
            ToolCall(
                id=c.id,
                name=c.name,
                arguments=self._restore_value(dict(c.arguments), mapping),
                raw_arguments=self.unredact(c.raw_arguments, mapping)
                if c.raw_arguments
                else c.raw_arguments,
            )
            for c in response.tool_calls
        )
        return replace(
            response,
            content=self.unredact(response.content, mapping),
            reasoning=self.unredact(response.reasoning, mapping)
            if response.reasoning
            else response.reasoning,
            tool_calls=calls,
        )

    def on_chunk(self, call: Call, chunk: ChunkResponse) -> ChunkResponse | None:
        """With ``restore``, put original values back into streamed text as it passes."""
        mapping = call.metadata.get(_MAP_KEY)
        if not mapping:
            return None
        held: str = call.metadata.get(_BUFFER_KEY, "")
        text = held + chunk.content
        if chunk.is_complete:
            call.metadata[_BUFFER_KEY] = ""
            out = self.unredact(text, mapping)
        else:
            cut = len(text)
            partial = _PLACEHOLDER_PREFIX.search(text, max(0, len(text) - 48))
            if partial is not None:
                cut = partial.start()
            call.metadata[_BUFFER_KEY] = text[cut:]
            out = self.unredact(text[:cut], mapping)
        if out == chunk.content:
            return None
        return replace(chunk, content=out)
