"""Catalogue commands: ``models``, ``show``, ``register``, ``remove``, ``alias``, ``paths``."""

from __future__ import annotations

from typing import Any

import click

from llmfactory.cli import cli, get_factory, make_console, print_json

__all__: list[str] = []

_CAPABILITY_HELP = "chat, streaming, tools, vision, embedding, reasoning, json_output, completion"


def _price(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    return f"{value:g}"


def _context(value: int | None) -> str:
    if value is None:
        return "?"
    return f"{value:,}"


@cli.command("models")
@click.option("--runtime", "-r", help="Only this runtime (api, ollama, lmstudio, …).")
@click.option("--provider", "-p", help="Only models made by this provider (openai, meta, …).")
@click.option(
    "--capability",
    "-c",
    multiple=True,
    help=f"Only models with this capability ({_CAPABILITY_HELP}); repeatable.",
)
@click.option("--available", is_flag=True, help="Only models available now.")
@click.option("--host", help="Only models on this host (host or host:port).")
@click.option("--search", "-s", help="Only models whose id, name or family contains this text.")
@click.option("--group", "group", is_flag=True,
              help="One row per logical model: replicas (hosts serving the same model) together.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@click.pass_context
def models_command(
    ctx: click.Context,
    runtime: str | None,
    provider: str | None,
    capability: tuple[str, ...],
    available: bool,
    host: str | None,
    search: str | None,
    group: bool,
    as_json: bool,
) -> None:
    """List known models: the built-in catalogue, discovered and registered ones.

    Models several hosts serve (replicas: see docs/replicas.md) show their count in a
    `replicas` column, or one row each with --group.
    """
    from llmfactory.cli.grouping import grouped_rows, model_dicts, replica_column

    factory = get_factory(ctx)
    models = factory.list_models(
        runtime=runtime,
        provider=provider,
        capability=list(capability) or None,
        available=True if available else None,
        host=host,
        search=search,
    )
    if group:
        _print_groups(grouped_rows(factory, models), as_json)
        return
    if as_json:
        print_json(model_dicts(factory, models))
        return
    from rich.table import Table

    replicas = replica_column(factory, models)
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("id", no_wrap=True)
    table.add_column("provider")
    table.add_column("runtime")
    table.add_column("context", justify="right")
    table.add_column("capabilities")
    table.add_column("$in/M", justify="right")
    table.add_column("$out/M", justify="right")
    table.add_column("available")
    if replicas is not None:
        table.add_column("replicas", justify="right")
    for i, m in enumerate(models):
        table.add_row(
            m.identifier,
            m.provider,
            m.runtime,
            _context(m.context_length),
            ",".join(m.capabilities),
            _price(m.input_price_per_million),
            _price(m.output_price_per_million),
            "yes" if m.available else f"no (last seen {m.last_seen:%Y-%m-%d %H:%M})",
            *([replicas[i]] if replicas is not None else []),
        )
    console = make_console()
    console.print(table)
    console.print(f"[dim]{len(models)} model(s)[/dim]")


def _print_groups(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("id", no_wrap=True)
    for name in ("provider", "runtime"):
        table.add_column(name)
    table.add_column("context", justify="right")
    table.add_column("capabilities")
    table.add_column("$in/M", justify="right")
    table.add_column("$out/M", justify="right")
    table.add_column("available")
    table.add_column("hosts", overflow="fold")
    for row in rows:
        pricing = row["pricing"]
        table.add_row(
            row["id"],
            row["provider"],
            row["runtime"],
            _context(row["context_length"]),
            ",".join(row["capabilities"]),
            _price(pricing["input_per_million"]),
            _price(pricing["output_per_million"]),
            "yes" if row["available"] else "no",
            ", ".join(row["hosts"]) or "-",
        )
    console = make_console()
    console.print(table)
    console.print(f"[dim]{len(rows)} model(s)[/dim]")


@cli.command("show")
@click.argument("identifier")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def show_command(ctx: click.Context, identifier: str, as_json: bool) -> None:
    """Describe one model (identifier, alias or unique name)."""
    factory = get_factory(ctx)
    model = factory.get_model(identifier)
    data = model.to_dict()
    if as_json:
        print_json(data)
        return
    from rich.table import Table

    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")

    def add(key: str, value: Any) -> None:
        table.add_row(key, "-" if value in (None, "", [], {}) else str(value))

    add("id", data["id"])
    for key in ("name", "provider", "runtime", "host", "service", "source"):
        add(key, data[key])
    add("context length", data["context_length"])
    add("max output tokens", data["max_output_tokens"])
    add("capabilities", ", ".join(data["capabilities"]))
    pricing = data["pricing"]
    add(
        "pricing (USD/M tokens)",
        f"in {_price(pricing['input_per_million'])}, out {_price(pricing['output_per_million'])}"
        + (
            f", cached in {_price(pricing['cached_input_per_million'])}"
            if pricing["cached_input_per_million"] is not None
            else ""
        ),
    )
    for key, value in data["details"].items():
        add(key.replace("_", " "), value)
    add("available", "yes" if data["available"] else "no")
    add("first seen", data["first_seen"])
    add("last seen", data["last_seen"])
    add("set by you", ", ".join(data["user_fields"]))
    make_console().print(table)


@cli.command("register")
@click.argument("identifier")
@click.option("--context-length", type=click.IntRange(min=1), help="Context window in tokens.")
@click.option("--max-output", type=click.IntRange(min=1), help="Maximum output tokens.")
@click.option(
    "--capability", "-c", multiple=True, help=f"A capability ({_CAPABILITY_HELP}); repeatable."
)
@click.option("--price-in", type=click.FloatRange(min=0), help="USD per million input tokens.")
@click.option("--price-out", type=click.FloatRange(min=0), help="USD per million output tokens.")
@click.option("--provider", help="Who made the model (inferred from the name if not given).")
@click.option("--json", "as_json", is_flag=True, help="Print the stored model as JSON.")
@click.pass_context
def register_command(
    ctx: click.Context,
    identifier: str,
    context_length: int | None,
    max_output: int | None,
    capability: tuple[str, ...],
    price_in: float | None,
    price_out: float | None,
    provider: str | None,
    as_json: bool,
) -> None:
    """Add a model, or set fields of a known one (they survive rediscovery)."""
    fields: dict[str, Any] = {}
    if context_length is not None:
        fields["context_length"] = context_length
    if max_output is not None:
        fields["max_output_tokens"] = max_output
    if capability:
        fields["capabilities"] = list(capability)
    if price_in is not None:
        fields["input_price_per_million"] = price_in
    if price_out is not None:
        fields["output_price_per_million"] = price_out
    if provider is not None:
        fields["provider"] = provider.lower()
    factory = get_factory(ctx)
    model = factory.register_model(identifier, **fields)
    if as_json:
        print_json(model.to_dict())
    else:
        click.echo(f"registered {model.identifier}")


@cli.command("remove")
@click.argument("identifier")
@click.pass_context
def remove_command(ctx: click.Context, identifier: str) -> None:
    """Delete a model from the registry."""
    factory = get_factory(ctx)
    model = factory.get_model(identifier)  # raises with suggestions when unknown
    factory.unregister_model(model.identifier)
    click.echo(f"removed {model.identifier}")


@cli.command("alias")
@click.argument("name", required=False)
@click.argument("identifier", required=False)
@click.option("--remove", "remove", is_flag=True, help="Delete the alias NAME.")
@click.option("--json", "as_json", is_flag=True, help="Print aliases as JSON.")
@click.pass_context
def alias_command(
    ctx: click.Context, name: str | None, identifier: str | None, remove: bool, as_json: bool
) -> None:
    """Name a model: `alias NAME ID`; list aliases with no arguments; `--remove NAME`."""
    factory = get_factory(ctx)
    if remove:
        if not name:
            raise click.UsageError("give the alias to remove: llmfactory alias --remove NAME")
        if not factory.remove_alias(name):
            raise ValueError(f"no alias {name!r}; `llmfactory alias` lists them")
        click.echo(f"removed alias {name}")
        return
    if name and identifier:
        model = factory.set_alias(name, identifier)
        click.echo(f"{name} -> {model.identifier}")
        return
    if name:
        raise click.UsageError("give both NAME and ID: llmfactory alias NAME ID")
    aliases = factory.aliases
    if as_json:
        print_json(aliases)
        return
    for alias, target in sorted(aliases.items()):
        click.echo(f"{alias} -> {target}")


@cli.command("paths")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def paths_command(as_json: bool) -> None:
    """Show where the registry and the config file live."""
    from llmfactory.config import Settings

    settings = Settings.load()
    path = settings.database_path
    data = {
        "data_dir": str(settings.data_dir),
        "config_dir": str(settings.config_dir),
        "config_file": str(settings.config_file),
        "config_file_exists": settings.config_file.exists(),
        "database_url": _hide_password(settings.database_url),
        "database_file": str(path) if path else None,
        "database_file_exists": bool(path and path.exists()),
    }
    if as_json:
        print_json(data)
        return
    for key, value in data.items():
        click.echo(f"{key}: {value}")


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url
