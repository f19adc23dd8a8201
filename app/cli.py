"""``flask --app wsgi mcp ...``: commands for operators and developers; and what ``flask run`` serves."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import click
from flask import Flask
from flask import current_app
from flask.cli import AppGroup
from flask.cli import run_command

from app.mcp_server import ScopedServer
from app.settings import ServedAddress
from app.settings import Settings

logger = logging.getLogger(__name__)

mcp_cli = AppGroup("mcp", help="MCP server commands.")


def flask_run_address() -> ServedAddress | None:
    """Where ``flask run`` is about to listen, when it is the command loading the app.

    ``flask run`` parses ``--host``, ``--port`` and ``--cert`` (or FLASK_RUN_HOST,
    FLASK_RUN_PORT, FLASK_RUN_CERT) before it imports the app, and its Click
    context holds them while it does, in the reloader's child process too.
    Flask exports none of them, so this is the one place they can be read.
    """
    context = click.get_current_context(silent=True)
    while context is not None and context.command is not run_command:
        context = context.parent
    if context is None:
        return None
    params = context.params
    host, port = str(params.get("host") or "127.0.0.1"), int(params.get("port") or 0)
    return ServedAddress(host, port, https=params.get("cert") is not None)


def warn_if_served_elsewhere(settings: Settings, served: ServedAddress | None) -> None:
    """MCP_RESOURCE_URL names another port than the one ``flask run`` listens on: clients will knock elsewhere."""
    if served is None:
        return
    resource = urlsplit(settings.resource_url)
    if (resource.port or {"http": 80, "https": 443}[resource.scheme]) != served.port:
        logger.warning(
            "MCP_RESOURCE_URL is %s but flask run listens on port %d: clients are sent to the URL, and this "
            "server answers requests on port %d with 421 (unset MCP_RESOURCE_URL to advertise the port served)",
            settings.resource_url,
            served.port,
            served.port,
        )


@mcp_cli.command("token")
@click.option("--sub", default="dev-user", show_default=True, help="The token's subject (the user).")
@click.option("--scope", "scope", default="", help="Space-separated scopes (flask mcp tools lists them).")
@click.option("--lifetime", default=3600, show_default=True, type=click.IntRange(60, 7 * 24 * 3600), help="Seconds.")
@click.option("--client-id", default="dev-cli", show_default=True)
def token_command(sub: str, scope: str, lifetime: int, client_id: str) -> None:
    """Print an access token for this server (development mode only)."""
    issuer = current_app.extensions.get("dev_issuer")
    if issuer is None:
        raise click.ClickException(
            "tokens can only be minted in development mode (MCP_DEV=1); "
            "in production your authorization server issues them"
        )
    click.echo(issuer.mint(sub, scope.split(), lifetime=lifetime, client_id=client_id))


@mcp_cli.command("doctor")
@click.option("--token", default=None, help="A sample access token to take apart (never logged).")
def doctor_command(token: str | None) -> None:
    """Check the configuration against the identity provider, and optionally a token."""
    from app.doctor import diagnose

    settings = current_app.extensions["mcp_settings"]
    report = diagnose(settings, current_app.extensions["mcp_auth"].verifier, token)
    click.echo(report.render())
    if report.exit_code:
        raise click.exceptions.Exit(report.exit_code)
    click.echo("no problems found")


@mcp_cli.command("tools")
def tools_command() -> None:
    """List the tools, resources and prompts, the scopes each requires and the provider it comes from."""
    tools: ScopedServer = current_app.extensions["mcp_tools"]
    settings: Settings = current_app.extensions["mcp_settings"]
    kinds = (("tool", "Tools"), ("resource", "Resources"), ("prompt", "Prompts"))
    rows = {kind: [r for r in tools.registrations if r.kind == kind] for kind, _ in kinds}
    width = max((len(r.name) for r in tools.registrations), default=0)
    scopes_width = max((len(" ".join(sorted(r.scopes))) for r in tools.registrations), default=0)
    scopes_width = max(scopes_width, len("any valid token"))
    for kind, title in kinds:
        click.echo(f"{title} ({len(rows[kind])}):")
        for row in rows[kind]:
            scopes = " ".join(sorted(row.scopes)) or "any valid token"
            click.echo(f"  {row.name:<{width}}  {scopes:<{scopes_width}}  {row.provider}")
        if not rows[kind]:
            click.echo("  none")
    hierarchy = tools.policy.hierarchy()
    source = "MCP_SCOPE_HIERARCHY" if settings.scope_hierarchy is not None else "declared by the tools"
    click.echo(f"Scope hierarchy ({source}):")
    for broad, narrow in sorted(hierarchy.items()):
        click.echo(f"  {broad} implies {' '.join(sorted(narrow))}")
    if not hierarchy:
        click.echo("  none")
    click.echo(f"Scopes advertised in the metadata: {' '.join(settings.scopes_supported) or 'none'}")


def init_app(app: Flask) -> None:
    app.cli.add_command(mcp_cli)
