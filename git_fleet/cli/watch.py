"""git fleet-watch: the fleet on one live screen, or printed once (--once, --json)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import click

from ..errors import UsageError
from ..fleet import Fleet
from ..picture import NEEDS_YOU, Picture
from . import command, print_json, warn
from .output import state_of

NOTIFY = ("bell", "tmux", "off")

# a line of the screen: its text and its style (the live screen's colours; plain text ignores it)
Line = tuple[str, str]


@command()
@click.option("--once", is_flag=True, help="Print the picture once, as plain text, and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print the picture once as JSON and exit.")
@click.option("--notify", type=click.Choice(NOTIFY), default="bell", show_default=True,
              help="How the live screen says that an agent starts needing you: the terminal's bell, "
                   "tmux's message line, or not at all.")
def watch(once: bool, as_json: bool, notify: str) -> int:
    """One live screen of the fleet: what needs you, what will conflict, what is ready to merge.

    \b
    A row per agent, those that need you first: its state (needs you, with the question or
    permission asked; working, with the tool; idle; exited; from its CLI's hooks, else running
    or stopped from tmux), since when, its claimed task, commits ahead of and behind the base,
    uncommitted files, and edits its zone refused. Then the conflicts coming (each pair of
    agents, and each agent against the base, with the paths) and the merge order; each
    checkpoint and whether it is ready, and if not, why; and the bus: open, claimed, done and
    failed tasks, and lapsed leases.

    \b
    Keys:
      up/down, k/j  move between agents
      Enter         go to the agent's tmux pane (outside tmux: the command that does)
      m             merge the checkpoint that is ready, after a yes (asks which, if several)
      s             git fleet-sync: the base into the agents' branches, after a yes
      r             look at everything again now
      ?             the keys
      q             quit

    The screen follows the fleet as it changes (inotify on the branches, the worktrees, the
    agents' state and the bus; timers where it cannot), and never waits for a merge it runs.
    With --once or --json it prints the same picture once: for scripts, and where there is no
    terminal. The JSON has the other commands' schema: status --json's object, its agent rows
    with ps --json's keys too and the claimed task, plus the checkpoints and the bus.
    """
    if once and as_json:
        raise UsageError("--once and --json both print the picture once", "give one of them")
    fleet = Fleet.here()  # (what its opening recovered, or found in progress, is said on the screen)
    recovered, fleet.recovered = fleet.recovered, []
    if as_json or once or not sys.stdout.isatty() or not sys.stdin.isatty():
        for line in recovered:
            warn(line)
    picture = Picture(fleet)
    if as_json:
        print_json(picture.refresh())
        return 0
    if once or not sys.stdout.isatty() or not sys.stdin.isatty():
        for text, _style in render(picture.refresh(), width=_width(), now=time.time()):
            click.echo(text.rstrip())
        return 0
    from .screen import CannotDraw, Screen  # (curses: only the live screen needs it)

    try:
        return Screen(fleet, picture, notify, recovered).run()
    except CannotDraw as e:
        warn(f"no live screen on this terminal (TERM={os.environ.get('TERM', '')}: {e}); the picture once:")
        for text, _style in render(picture.refresh(), width=_width(), now=time.time()):
            click.echo(text.rstrip())
        return 0


def _width() -> int:
    try:
        return max(60, os.get_terminal_size().columns)
    except OSError:
        return 100


def render(picture: dict[str, Any], width: int, now: float, selected: str | None = None) -> list[Line]:
    """The picture as lines of at most `width` characters, each with its style; `selected` is the
    agent the live screen's cursor is on."""
    lines: list[Line] = []
    agents = picture["agents"]
    need = [r["agent"] for r in agents if r["state"] == NEEDS_YOU]
    head = f"fleet on {picture['base']}: {len(agents)} agent{'s' * (len(agents) != 1)}"
    head += f", {len(need)} need{'s' * (len(need) == 1)} you" if need else ""
    lines.append((head, "needs" if need else "head"))
    remote = picture.get("remote")
    if remote and remote["stale"]:  # (a fleet across machines whose remote did not answer)
        fetched = f"as fetched {short_age(int(now - remote['fetched_age']), now)} ago" \
            if remote["fetched_age"] is not None else "never fetched"
        lines.append((f"other machines {fetched}: {remote['stale']}", "warn"))
    cols = [("AGENT", 10), ("STATE", 25), ("SINCE", 6), ("TASK", 9), ("AHEAD", 6), ("BEHIND", 7),
            ("DIRTY", 6), ("REFUSED", 8)]
    lines.append((_row([c for c, _ in cols], cols, " "), "title"))
    for r in agents:
        cells = [r["agent"], state_of(r), short_age(r["state_since"], now),
                 r["task"]["name"] if r["task"] else "-", _num(r.get("ahead")), _num(r.get("behind")),
                 _num(r.get("dirty")), str(r["refused"]) if r["reported"] else "-"]
        mark = ">" if r["agent"] == selected else " "
        style = "needs" if r["state"] == NEEDS_YOU else "zone" if r.get("out_of_zone") else ""
        lines.append((_row(cells, cols, mark), "selected" if mark == ">" else style))
        if r["state"] == NEEDS_YOU and r["message"] and len(state_of(r)) >= 25:
            lines.append((f"    asks: {' '.join(str(r['message']).split())}", "needs"))
        if r.get("out_of_zone"):
            lines.append((f"    out of zone: {', '.join(r['out_of_zone'])}", "zone"))
        if r.get("machine") and not r.get("here"):  # (a fleet across machines, as last fetched)
            heard = f", heard {short_age(int(now) - r['heard'], now)} ago" if r.get("heard") is not None else ""
            lines.append((f"    runs on {r.get('who') or r['machine']}{heard}; its branch as published", ""))
        if r.get("unpublished"):
            lines.append((f"    not published: {r['unpublished']}", "warn"))
    lines += [("", ""), ("CONFLICTS COMING", "title")]
    for c in picture["conflicts"]:
        a, b = c["agents"]
        lines.append((f"  {a} and {b if b != picture['base'] else 'the base'}: {', '.join(c['paths'])}", "warn"))
    if not picture["conflicts"]:
        lines.append(("  none", ""))
    if picture["merge_order"] or picture["held_back"]:
        order = "  merge order: " + (", ".join(picture["merge_order"]) or "-")
        if picture["held_back"]:
            order += f" (then {', '.join(picture['held_back'])}, after git fleet-sync)"
        lines.append((order, ""))
    lines += [("", ""), ("CHECKPOINTS", "title")]
    for cp in picture["checkpoints"]:
        name = cp["checkpoint"] or "?"
        lines.append((f"  {name:<12} {cp['state']:<12} {cp['why']}".rstrip(),
                      "ready" if cp["state"] == "ready" else "warn" if cp["state"] in ("blocked", "unknown") else ""))
    if not picture["checkpoints"]:
        lines.append(("  none declared (git fleet-checkpoint add NAME --agent A ...)", ""))
    lines += [("", ""), (_bus_line(picture["bus"]), "warn" if picture["bus"]["lapsed"] else "")]
    return [(printable(text)[:width], style) for text, style in lines]


def printable(text: str) -> str:
    """`text` with control characters (an agent's message may carry escape sequences) shown as '?'."""
    return "".join(c if c.isprintable() else "?" for c in text)



def short_age(stamp: int | None, now: float) -> str:
    """How long since `stamp`, in a column of six: 41s, 3m, 2h, 5d ('-' if not known)."""
    if not stamp:
        return "-"
    secs = max(0, int(now) - stamp)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def _bus_line(bus: dict[str, Any]) -> str:
    if bus["error"]:
        return f"BUS  cannot be read: {bus['error']}"
    counts = [f"{bus[s]} {s}" for s in ("open", "claimed", "done", "failed", "cancelled", "invalid")
              if bus[s] or s in ("open", "claimed", "done")]
    line = "BUS  " + ", ".join(counts)
    if bus["lapsed"]:
        line += "; lapsed: " + ", ".join(f"{t['name']} ({t['agent']})" for t in bus["lapsed"])
    return line


def _row(cells: list[str], cols: list[tuple[str, int]], mark: str) -> str:
    out = mark
    for cell, (_, w) in zip(cells, cols, strict=True):
        out += (cell if len(cell) < w else cell[: w - 2] + "…").ljust(w)
    return out


def _num(v: object) -> str:
    return "-" if v is None else str(v)
