"""Run-time holds: ``autofix pause`` / ``resume`` and ``autofix silence add|list|expire``.

While a service runs, these are carried out by it (``autofix.control``) and take effect
on its next decision; without one they write the store, and the next ``autofix serve``
honours them (a pause survives restarts; so do silences).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from autofix.cli._app import actor, app, out, parse_span, print_json, reader, settings, writer
from autofix.errors import InputError

silence_app = typer.Typer(
    rich_markup_mode=None,  # plain help: rich's help renderer takes ~0.5 s to import
    help="Silences, as in Alertmanager: decisions they match are recorded, not acted on.",
    no_args_is_help=True,
)
app.add_typer(silence_app, name="silence")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _moment(flag: str, value: str) -> datetime:
    """An ISO 8601 time (UTC when it names no zone)."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{flag}: {value!r} is not an ISO 8601 time") from None
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


@app.command()
def pause(
    reason: Annotated[
        str, typer.Option("--reason", help="Why (shown in status, on the dashboard and /metrics).")
    ],
    duration: Annotated[
        str | None,
        typer.Option("--for", help="End by itself after this long, e.g. 2h (else: `resume`)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop autofix from applying any fix (rules still decide, in shadow); survives restarts."""
    from autofix import pause as pausing

    span = parse_span("--for", duration) if duration is not None else None
    with writer(settings()) as store:
        held = pausing.pause(store, _now(), reason=reason, actor=actor(), duration=span)
    if as_json:
        print_json(held.as_dict())
        return
    out.print("[bold red]paused[/]: ", end="")
    out.print(f"{held.describe()}; nothing is applied until `autofix resume`", markup=False)


@app.command()
def resume(as_json: JsonOpt = False) -> None:
    """End the pause: fixes are applied again from the next decision on."""
    from autofix import pause as pausing

    with writer(settings()) as store:
        ended = pausing.resume(store, _now(), actor=actor())
    if as_json:
        print_json({"paused": False, "ended": ended.as_dict() if ended is not None else None})
        return
    if ended is None:
        out.print("autofix was not paused")
    else:
        out.print(f"resumed: the pause by {ended.actor} ({ended.reason}) ended", markup=False)


@silence_app.command("add")
def silence_add(
    matchers: Annotated[
        list[str],
        typer.Argument(
            help="name=value, name!=value, name=~regex or name!~regex on rule, target, host "
            "or a label; all must hold."
        ),
    ],
    comment: Annotated[str, typer.Option("--comment", help="Why, and who to ask.")],
    duration: Annotated[str, typer.Option("--for", help="How long it silences, e.g. 2h.")] = "1h",
    starts: Annotated[
        str | None, typer.Option("--start", help="ISO 8601 start (default now; UTC if no zone).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Silence the decisions the matchers select: recorded as silenced, never acted on."""
    from autofix import silences

    parsed = silences.parse_matchers(matchers)
    span = parse_span("--for", duration)
    now = _now()
    start = _moment("--start", starts) if starts is not None else None
    with writer(settings()) as store:
        made = silences.add(
            store, now, parsed, creator=actor(), comment=comment, duration=span, starts_at=start
        )
    if as_json:
        print_json(made.as_dict(now))
        return
    out.print(
        f"{made.describe()} {made.state(now)} until {made.end:%Y-%m-%d %H:%M}Z",
        markup=False,
        highlight=False,
    )


@silence_app.command("list")
def silence_list(
    expired: Annotated[
        bool, typer.Option("--expired", help="Also silences that ended in the last 7 days.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Active and pending silences (newest first)."""
    from datetime import timedelta

    from rich.table import Table

    from autofix import silences

    now = _now()
    with reader(settings()) as store:
        found = silences.listing(store, now, since=timedelta(days=7) if expired else timedelta(0))
    if as_json:
        print_json([s.as_dict(now) for s in found])
        return
    if not found:
        out.print("no silences" + (" in the last 7 days" if expired else " in force"))
        return
    table = Table("id", "state", "matchers", "until (UTC)", "by", "comment", title="silences")
    for s in found:
        table.add_row(
            str(s.id),
            s.state(now),
            ", ".join(str(m) for m in s.matchers),
            f"{s.end:%Y-%m-%d %H:%M}",
            s.creator,
            s.comment,
        )
    out.print(table)


@silence_app.command("expire")
def silence_expire(
    silence_id: Annotated[int, typer.Argument(help="Id of the silence (see `silence list`).")],
    as_json: JsonOpt = False,
) -> None:
    """End a silence now."""
    from autofix import silences

    now = _now()
    with writer(settings()) as store:
        ended: Any = silences.expire(store, silence_id, now, actor=actor())
    if as_json:
        print_json(ended.as_dict(now))
        return
    out.print(f"{ended.describe()} expired", markup=False, highlight=False)
