"""git fleet-teleport: an agent's whole state to another machine and back (push, pull, list)."""

from __future__ import annotations

from typing import Any

import click

from ..fleet import Fleet
from ..teleport import parked, pull_agent, push_agent
from . import CONTEXT, FleetCommand, FleetGroup, completers, hint, print_json, warn
from .output import age, load, table


@click.group(cls=FleetGroup, context_settings=CONTEXT)
def teleport() -> None:
    """Move an agent's whole state to another machine and back, through a git remote.

    push snapshots the agent's branch, its staged and unstaged changes and its untracked (not
    ignored) files exactly, with its zone, session settings and claimed tasks, into
    refs/fleet/teleport/AGENT on the remote; the local worktree is left as it was. pull, in
    another clone, recreates the agent: registers it if needed, makes its worktree and branch,
    restores files, index and untracked files byte for byte, and claims its tasks on the bus
    there. Coming back works the same way. Where both sides moved on, pull refuses and says how
    to keep both, rather than losing work; --force takes the snapshot and keeps what was here
    at refs/fleet/backups/AGENT/N, a new ref each time. Work inside a submodule or in a
    repository of its own in the worktree is refused: it lives in another repository's objects.

    The remote is any remote git can reach (a name, a path, file://, git://, ssh, https), with
    your usual git credentials; git-fleet stores none. Default: the base branch's remote, else
    origin, else the only remote. Snapshots are shaped like git stash entries, so
    `git stash apply --index SNAPSHOT` works on them too.
    """


remote_option = click.option("--remote", metavar="REMOTE",
                             help="A remote name, URL or path (default: the base branch's remote, else origin).")


def _teleporting(agent: str) -> Fleet:
    fleet = load()
    fleet.refuse_agents("teleport another agent", but=agent)
    return fleet


@teleport.command("push", cls=FleetCommand)
@click.argument("agent", shell_complete=completers.agents)
@remote_option
@click.option("--force", is_flag=True, help="Replace a snapshot on the remote that this clone has not seen.")
@click.option("--json", "as_json", is_flag=True, help="Print what was sent as JSON.")
def teleport_push(agent: str, remote: str | None, force: bool, as_json: bool) -> int:
    """Send the agent's whole state to the remote; the local worktree is left as it was.

    Where another clone pushed a snapshot of the agent first (at the same time, or since this
    clone last sent or received one), nothing is sent, and it says which snapshot is there: pull
    it, or replace it with --force. Only a push the remote itself declines (its hooks, your
    access) is reported as refused.
    """
    out = push_agent(_teleporting(agent), agent, remote, force=force)
    if as_json:
        print_json(_teleported(out))
        return 0
    click.echo(f"sent '{agent}' to {out.remote}: {out.branch} at {out.head[:12]}, {_carried(out.counts)}, "
               f"{len(out.tasks)} claimed task(s)")
    hint(f"on the other machine: git fleet-teleport pull {agent}" + (f" --remote {remote}" if remote else ""))
    hint(f"this worktree is unchanged; stop the agent here so only one copy works on it (git fleet-down {agent})")
    return 0


@teleport.command("pull", cls=FleetCommand)
@click.argument("agent", shell_complete=completers.agents)
@remote_option
@click.option("--force", is_flag=True,
              help="Take the snapshot even where this side moved on; what was here is kept at refs/fleet/backups/AGENT/N.")
@click.option("--path", "path", metavar="DIR", shell_complete=completers.directories,
              help="Where to make the agent's worktree if this repository has none for it "
                   "(default: the configured place, if nothing is there).")
@click.option("--take-over", is_flag=True,
              help="In a fleet across machines: take the agent from the machine that holds it (one that did not push it).")
@click.option("--json", "as_json", is_flag=True, help="Print what was restored as JSON.")
def teleport_pull(agent: str, remote: str | None, force: bool, path: str | None, take_over: bool, as_json: bool) -> int:
    """Recreate the agent here from its snapshot on the remote: worktree, branch, index, files, tasks.

    Only a worktree this repository has registered for the agent is restored into. Without one,
    one is made at --path DIR, or where the configuration puts it if nothing is there yet; a
    directory that is not this repository's worktree is never touched.

    In a fleet across machines (through this remote) the pull also takes the agent's hold for
    this machine: after a teleport push there, which handed it off, or with --take-over.
    """
    out = pull_agent(_teleporting(agent), agent, remote, force=force, path=path, take_over=take_over)
    for w in out.warnings:
        warn(w)
    if as_json:
        print_json(_teleported(out))
        return 0
    what = "already as the snapshot has it" if out.unchanged else _carried(out.counts)
    click.echo(f"'{agent}' from {out.remote} in {out.worktree}: {what}; {len(out.tasks)} claimed task(s)")
    return 0


@teleport.command("list", cls=FleetCommand)
@remote_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def teleport_list(remote: str | None, as_json: bool) -> int:
    """The snapshots parked on the remote: agent, branch, where and when it was sent, what it carries."""
    rows = parked(load(), remote)
    if as_json:
        print_json(rows)
        return 0
    table([[r["agent"], r.get("branch") or "?", r.get("host") or "?",
             age(r["time"]) if r.get("time") else "?",
             f"{r.get('staged', 0)} staged, {r.get('unstaged', 0)} unstaged, {r.get('untracked', 0)} untracked"
             + ("" if r["seen_here"] else " (new here)") + (f" error: {r['error']}" if r.get("error") else "")]
            for r in rows])
    return 0


def _carried(c: dict[str, int]) -> str:
    return f"{c['staged']} staged, {c['unstaged']} unstaged, {c['untracked']} untracked file(s)"


def _teleported(out: Any) -> dict[str, Any]:
    return {"agent": out.agent, "remote": out.remote, "snapshot": out.snapshot, "branch": out.branch, "head": out.head,
            "worktree": out.worktree, **out.counts, "tasks": out.tasks, "created": out.created,
            "unchanged": out.unchanged, "warnings": out.warnings}
