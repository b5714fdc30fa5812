"""``llmfactory usage``: tokens and cost recorded in the registry, across processes."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import click

from llmfactory.cli import cli, make_console, print_json

__all__: list[str] = []

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_FIELDS = ("calls", "errors", "prompt_tokens", "completion_tokens", "cached_tokens",
           "reasoning_tokens", "cost_usd", "latency_ms", "estimated")


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``7d``, ``12h``, ``30m``, ``2w``, ``90s`` ago, or an ISO date / date-time (UTC if naive)."""
    now = now or datetime.now(timezone.utc)
    match = _AGO.match(text)
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2).lower()])
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a duration (7d, 12h, 30m, 2w) nor an ISO date (2025-01-31)",
            param_hint="--since",
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def _group(row: dict[str, Any]) -> dict[str, Any]:
    data = {name: row[name] for name in _FIELDS}
    data["total_tokens"] = row["prompt_tokens"] + row["completion_tokens"]
    data["cost_usd"] = round(row["cost_usd"], 10)
    data["latency_ms"] = round(row["latency_ms"], 3)
    return data


@cli.command("usage")
@click.option("--since", help="Only calls since then: 7d, 12h, 30m, 2w, or an ISO date.")
@click.option("--model", "model", metavar="ID",
              help="Only this identifier or alias, or every identifier of this model name.")
@click.option("--by", type=click.Choice(["model", "day"]), help="One line per model or per day.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def usage_command(
    ctx: click.Context, since: str | None, model: str | None, by: str | None, as_json: bool
) -> None:
    """Tokens and cost of the calls recorded in the registry (every process, every model).

    Every conversation llmfactory creates records its calls (never their
    content); this sums them, optionally since a time, for one model, and
    grouped by model or by day (UTC).
    """
    from llmfactory.factory import LLMFactory

    since_at = parse_since(since) if since else None
    factory = LLMFactory.instance()
    if not factory.initialized:
        factory.discover = False  # reading the registry needs no probing
    factory.ensure_initialized()
    factory.flush_usage()
    if model is not None:
        model = factory.aliases.get(model, model)
    store = factory.store
    total_rows = store.summarize_usage(since=since_at, model=model)
    groups = store.summarize_usage(since=since_at, model=model, by=by) if by else []
    empty = {name: 0 for name in _FIELDS} | {"cost_usd": 0.0, "latency_ms": 0.0}
    total = _group(total_rows[0] if total_rows else empty)
    if as_json:
        data: dict[str, Any] = {
            "since": since_at.isoformat() if since_at else None,
            "model": model,
            "by": by,
            "total": total,
        }
        if by:
            data["groups"] = [{by: row["key"], **_group(row)} for row in groups]
        print_json(data)
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False, show_footer=bool(by))
    first = by or "scope"
    table.add_column(first, footer="total", no_wrap=True)
    columns = [("calls", "calls"), ("errors", "errors"), ("prompt_tokens", "prompt"),
               ("completion_tokens", "completion"), ("cached_tokens", "cached"),
               ("reasoning_tokens", "reasoning")]
    for field, title in columns:
        table.add_column(title, justify="right", footer=f"{total[field]:,}")
    table.add_column("cost $", justify="right", footer=f"{total['cost_usd']:.6f}")
    rows = [(row["key"], _group(row)) for row in groups] if by else [("all", total)]
    for key, values in rows:
        table.add_row(
            str(key),
            *(f"{values[field]:,}" for field, _ in columns),
            f"{values['cost_usd']:.6f}",
        )
    console = make_console()
    console.print(table)
    scope = []
    if since_at:
        scope.append(f"since {since_at:%Y-%m-%d %H:%M} UTC")
    if model:
        scope.append(f"model {model}")
    estimated = f"; {total['estimated']} with estimated tokens" if total["estimated"] else ""
    console.print(
        f"[dim]{total['calls']} call(s){' ' + ', '.join(scope) if scope else ''}{estimated}[/dim]",
        highlight=False,
    )
