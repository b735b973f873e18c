"""``fieldstation web-password``: make the argon2 hash for ``web.password_hash``."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["register", "web_password"]


def web_password(
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            help="The operators' password (asked for when not given).",
        ),
    ],
) -> None:
    """Print the argon2 hash of an operators' password for the web page.

    Put it in a 0600 file (or an environment variable) and point web.password_hash at it,
    for example password_hash = "file:/etc/fieldstation/web-password".
    """
    from fieldstation.web.auth import hash_password

    if len(password) < 8:
        raise typer.BadParameter("use at least 8 characters", param_hint="--password")
    print(hash_password(password))


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("web-password")(web_password)
