"""``flask --app wsgi mcp ...``: commands for operators and developers."""

from __future__ import annotations

import click
from flask import Flask
from flask import current_app
from flask.cli import AppGroup

mcp_cli = AppGroup("mcp", help="MCP server commands.")


@mcp_cli.command("token")
@click.option("--sub", default="dev-user", show_default=True, help="The token's subject (the user).")
@click.option("--scope", "scope", default="", help='Space-separated scopes, e.g. "todo:read todo:write".')
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


def init_app(app: Flask) -> None:
    app.cli.add_command(mcp_cli)
