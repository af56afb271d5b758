"""What the commands share: the fleet loaded for a command, its warnings and questions on the
terminal, and the ways results are printed (a report's lines, a table, an age, the doctor's checks)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import click

from ..fleet import Fleet, Report
from . import note, paint, warn

if TYPE_CHECKING:
    from ..doctor import Item


def load(changes: str | None = None) -> Fleet:
    """The fleet of this repository, after finishing any merge a killed process left half done.
    `changes`: what the command changes of the fleet or the base, which an agent may not."""
    fleet = Fleet.here()
    if changes is not None:
        fleet.refuse_agents(changes)
    for line in fleet.recovered:
        warn(line)
    fleet.recovered = []
    fleet.waiting = lambda who: note(f"waiting for another git fleet command to finish ({who})")
    fleet.warn = warn
    fleet.confirm = _ask if sys.stdin.isatty() else None
    return fleet


def _ask(what: str, question: str) -> bool:
    note(what)
    return click.confirm(question, default=False, err=True)


def show_report(report: Report, verbose: bool) -> None:
    """Its warnings, always; its notes (what was done) only when `verbose`."""
    for w in report.warnings:
        warn(w)
    if verbose:
        for n in report.notes:
            note(n)


def table(rows: list[list[str]]) -> None:
    """Rows in columns, the last one as long as it is."""
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + ("  " if widths else "") + r[-1])


def age(stamp: int | None) -> str:
    """How long ago the Unix time `stamp` was, in words: 41 s ago, 3 mins ago, 2 days ago."""
    if stamp is None:
        return "-"
    secs = max(0, int(time.time()) - stamp)
    for unit, size in (("day", 86400), ("hour", 3600), ("min", 60)):
        if secs >= size:
            n = secs // size
            return f"{n} {unit}{'s' if n > 1 and unit != 'min' else ''} ago"
    return f"{secs} s ago"


def print_checks(items: list[Item]) -> None:
    """The doctor's checklist (doctor.Item), one check a line with its problems and fixes below."""
    for i in items:
        status = {"ok": paint("ok  ", "32"), "warning": paint("warn", "33"), "failure": paint("FAIL", "1;31")}[i.level]
        click.echo(f"{status}  {i.check}")
        for done in i.fixed:
            click.echo(f"      fixed: {done}")
        for problem, fix_with in [*i.problems, *i.warnings]:
            click.echo(f"      {problem}")
            if fix_with:
                click.echo(f"      fix: {fix_with}")
        for line in i.info:
            click.echo(f"      {line}")


def state_of(row: dict[str, Any], limit: int | None = None) -> str:
    """An agent's state as ps and the watch say it: working (Edit), needs you: MESSAGE (its first
    `limit` characters, if given), idle, exited; running/stopped where no hook reports."""
    state = str(row["state"])
    if row["tool"] and state == "working":
        return f"working ({row['tool']})"
    if row["message"] and state == "needs you":
        message = str(row["message"])
        if limit is None:
            return f"needs you: {' '.join(message.split())}"
        return f"needs you: {message[:limit]}{'...' if len(message) > limit else ''}"
    return state


def machine(r: dict[str, Any]) -> str:
    """Where an agent of a fleet across machines runs: here, another machine (and when it was
    last heard from), handed off, or nowhere yet."""
    if r.get("here"):
        return "here"
    if r.get("handed_off"):
        return "handed off"
    if not r.get("machine"):
        return "-"
    return f"{r['who']}, heard {age(int(time.time()) - r['heard'])}" if r.get("heard") is not None else str(r["who"])


def stale_hint(fetched: float | None) -> str:
    """What is shown of the other machines when the remote did not answer: as of when."""
    return ("what is shown of other machines is the last fetched state"
            + (f", fetched {age(int(fetched))}" if fetched is not None else ": never fetched"))

