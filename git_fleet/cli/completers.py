"""The shell_complete callbacks the commands name: the fleet's agents (with their zones), its
checkpoints, the tasks each task subcommand takes, and file and directory names left to the shell.
Each reads the fleet without changing anything (Fleet.look), and completes nothing, silently, when
it fails."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import click
from click.shell_completion import CompletionItem

from ..fleet import Fleet
from ..gateway import plumbing

if TYPE_CHECKING:
    from ..bus import Task

Callback = Callable[[click.Context, click.Parameter, str], list[CompletionItem]]


def _quiet(fn: Callback) -> Callback:
    """Complete nothing, silently, when `fn` fails (no fleet here, a broken config, ...)."""
    @functools.wraps(fn)
    def safe(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        try:
            return fn(ctx, param, incomplete)
        except Exception:  # noqa: BLE001 (a completion that fails offers nothing; the shell must never print an error)
            return []
    return safe


def _given(ctx: click.Context, param: click.Parameter) -> set[str]:
    value = ctx.params.get(param.name or "")
    return set(value) if isinstance(value, (tuple, list)) else set()


@_quiet
def agents(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The fleet's agents (less those given already), with their zones."""
    given = _given(ctx, param)
    return [CompletionItem(a.name, help=" ".join(a.zone)) for a in Fleet.look().config.agents.values()
            if a.name.startswith(incomplete) and a.name not in given]


@_quiet
def checkpoints(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The declared checkpoints, with their agents."""
    return [CompletionItem(c.name, help="agents: " + ", ".join(c.agents)) for c in Fleet.look().config.checkpoints.values()
            if c.name.startswith(incomplete)]


def _tasks(fleet: Fleet) -> list[Task]:
    tasks: list[Task] = fleet.bus().all()
    return tasks


def _held(t: Task) -> bool:
    """Whether someone holds `t` now, as bus.claims.holding decides: a live claim, not ended (its spec
    may be broken by hand since: its holder may still renew, release or finish it)."""
    return t.result is None and bool(t.claimed_by) and t.expires is not None and t.expires > time.time()


def _ids(tasks: list[Task], incomplete: str) -> list[CompletionItem]:
    """`tasks` by id as typed: task-007 (the default), 7 or 007."""
    found = []
    for t in tasks:
        form = next((f for f in (t.name, str(t.id), f"{t.id:03d}") if f.startswith(incomplete)), None)
        if form is not None:
            holder = f" by {t.claimed_by}" if _held(t) else ""
            found.append(CompletionItem(form, help=f"{t.status}{holder}: {t.title}"))
    return found


def _agent_here(fleet: Fleet) -> str | None:
    """The agent a command typed here runs as, by default (brief.worker, Fleet.refuse_agents):
    $FLEET_AGENT, else the agent whose worktree this is; None in the main worktree."""
    return os.environ.get("FLEET_AGENT") or (a.name if (a := fleet.current_agent()) is not None else None)


@_quiet
def tasks(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Every task on the bus."""
    return _ids(_tasks(Fleet.look()), incomplete)


@_quiet
def unended_tasks(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """What cancel takes: the tasks not ended (open, claimed, or with a spec broken by hand);
    none for an agent, which cancel refuses."""
    fleet = Fleet.look()
    if _agent_here(fleet) is not None:
        return []
    return _ids([t for t in _tasks(fleet) if t.result is None], incomplete)


@_quiet
def removable_tasks(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """What rm takes (Bus.remove): the tasks not ended that no worker ever claimed (a claim of a
    rm that was killed before it decided does not count; one deciding now holds the task) and
    that no unfinished task depends on, or may (its depends unreadable); none for an agent, which
    rm refuses."""
    fleet = Fleet.look()
    if _agent_here(fleet) is not None:
        return []
    return _ids(fleet.bus().removable(), incomplete)


@_quiet
def claimed_tasks(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """What done, fail, renew and release take: the tasks held by whoever runs them (--agent on
    the line, $FLEET_AGENT, the agent whose worktree this is), a spec broken by hand since the
    claim included; from the main worktree, with no agent known, everyone's."""
    fleet = Fleet.look()
    given = ctx.params.get("agent")
    who = given if isinstance(given, str) and given else _agent_here(fleet)
    return _ids([t for t in _tasks(fleet) if _held(t) and (who is None or t.claimed_by == who)], incomplete)


def files(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """File names, completed by the shell."""
    return [CompletionItem(incomplete, type="file")]


def directories(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Directory names, completed by the shell."""
    return [CompletionItem(incomplete, type="dir")]


@_quiet
def remotes(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """This clone's git remotes."""
    return [CompletionItem(r) for r in plumbing.out(["remote"]).split() if r.startswith(incomplete)]
