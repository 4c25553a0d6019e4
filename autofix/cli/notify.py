"""``autofix notify test``: send a test notification to every configured channel.

Exit 0 when every channel delivered it, 1 when one failed (after its retries), 2 when no
channel is configured or a ``AUTOFIX_NOTIFY_*`` setting is invalid.
"""

from __future__ import annotations

from typing import Annotated

import typer

from autofix.cli._app import app, print_json, settings
from autofix.cli._render import say
from autofix.errors import ConfigError

notify_app = typer.Typer(
    rich_markup_mode=None,  # plain help: rich's help renderer takes ~0.5 s to import
    help="Notifications: Slack, e-mail and a JSON webhook.",
    no_args_is_help=True,
)
app.add_typer(notify_app, name="notify")


@notify_app.command("test")
def notify_test(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    no_retry: Annotated[
        bool,
        typer.Option("--no-retry", help="Try each channel once (default: AUTOFIX_NOTIFY_RETRIES)."),
    ] = False,
) -> None:
    """Send a test notification to every configured channel and print how each fared."""

    # Imported here so that `autofix --help` does not pay for httpx and smtplib.
    from autofix.notify import Notifier, self_test

    current = settings()
    with Notifier.from_settings(current) as notifier:
        if not notifier.channels:
            raise ConfigError(
                "no notification channel configured: set AUTOFIX_NOTIFY_SLACK_URL, "
                "AUTOFIX_NOTIFY_WEBHOOK_URL or AUTOFIX_NOTIFY_SMTP_HOST"
            )
        results = notifier.deliver(self_test(current.hostname), retries=0 if no_retry else None)
    if as_json:
        print_json(results)
    else:
        for name, result in results.items():
            say(f"{name}: ", (result, "red" if result.startswith("failed") else "green"))
    if any(result.startswith("failed") for result in results.values()):
        raise typer.Exit(1)
