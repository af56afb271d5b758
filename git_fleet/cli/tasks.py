"""The bus: git fleet-task (path, add, list, show, claim, renew, release, done, fail, cancel, rm)
and git fleet-plan."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .. import brief, publish
from ..bus import Bus, Task, parse_id
from ..config import parse_duration
from ..errors import FleetError
from ..files import read_input
from ..fleet import Fleet
from . import CONTEXT, FleetCommand, FleetGroup, command, completers, hint, print_json, warn
from .output import load, table

if TYPE_CHECKING:
    from ..remote_bus import RemoteBus


def _stale(bus: object) -> None:
    """Say so when what is shown is the last known state of a bus whose remote did not answer."""
    stale = getattr(bus, "stale", None)
    if stale:
        warn(stale)


def _task_line(t: Task) -> list[str]:
    who = t.claimed_by or t.agent or "-"
    return [t.name, t.status, who, t.title]


@click.group(cls=FleetGroup, context_settings=CONTEXT)
def task() -> None:
    """The coordination bus: task specs, claims and results, in files.

    The orchestrator adds tasks; workers claim them atomically, renew their lease while they
    work, and finish them with a result. Everything lives in tasks/, results/ and
    master_plan.md (in the main worktree unless [bus] dir says otherwise), which every
    worktree sees live; the commands work the same from any worktree. Task specs are Markdown
    with a small front matter and can be written by hand. Two workers never get the same task;
    a claim whose lease lapses (a crashed worker) is taken over exactly once, and a result from
    a worker that lost its lease is not accepted (it is kept aside, never dropped).

    The orchestrator ends a task with cancel (open or claimed: its holder is refused from then
    on) and deletes one added by mistake with rm (never claimed, nothing waiting for it).
    """


@task.command("path", cls=FleetCommand)
def task_path() -> int:
    """Print the bus directory."""
    click.echo(load().bus().root)
    return 0


@task.command("add", cls=FleetCommand)
@click.argument("title")
@click.option("--agent", metavar="NAME", shell_complete=completers.agents, help="Only this agent may claim it (default: anyone).")
@click.option("--body-file", metavar="FILE", shell_complete=completers.files,
              help="The task's description, from a file, or - for standard input.")
@click.option("--depends", multiple=True, metavar="ID", shell_complete=completers.tasks,
              help="A task that must be done first (one that failed, was cancelled or removed is refused); repeat for more.")
@click.option("--priority", type=int, default=0, show_default=True, help="Higher is claimed first.")
def task_add(title: str, agent: str | None, body_file: str | None, depends: tuple[str, ...], priority: int) -> int:
    """Write a new task spec, tasks/task-NNN-<slug>.md, and print its id.

    A dependency must exist (exit status 2 if no task has that id) and be one a task can wait
    out: one that failed, was cancelled or removed is refused (exit status 1), as is one removed
    while the spec was written (the spec is deleted again)."""
    fleet = load()
    if agent:
        fleet.config.agent(agent)
    t = fleet.bus().add(title, agent=agent, body=read_input(body_file), depends=[parse_id(d) for d in depends],
                        priority=priority)
    brief.rewrite_briefs(fleet, [agent] if agent else [])
    click.echo(t.name)
    return 0


@task.command("list", cls=FleetCommand)
@click.option("--status", type=click.Choice(["open", "claimed", "done", "failed", "cancelled", "invalid"]),
              help="Only tasks in this state.")
@click.option("--agent", metavar="NAME", shell_complete=completers.agents,
              help="Only tasks assigned to or claimed by this agent.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def task_list(status: str | None, agent: str | None, as_json: bool) -> int:
    """List the tasks: id, state, agent and title. A spec that cannot be read is listed as invalid,
    with its path and line, and the rest of the bus keeps working."""
    bus = load().bus()
    tasks = bus.all()
    _stale(bus)
    tasks = [t for t in tasks if (not status or t.status == status) and (not agent or agent in (t.agent, t.claimed_by))]
    if as_json:
        print_json([t.as_dict() for t in tasks])
        return 0
    table([_task_line(t) for t in tasks])
    for t in tasks:
        if t.error:
            warn(t.error)
    return 0


@task.command("show", cls=FleetCommand)
@click.argument("id", shell_complete=completers.tasks)
@click.option("--json", "as_json", is_flag=True, help="Print the task as JSON.")
def task_show(id: str, as_json: bool) -> int:
    """Show one task: its spec, its state and its result, and any result kept aside (a holder's
    result that came after the task was cancelled or taken over)."""
    bus = load().bus()
    t = bus.get(parse_id(id))
    _stale(bus)
    kept = [str(p) for p in bus.unrecorded(t)]
    if as_json:
        print_json({**t.as_dict(), "body": t.body, "unrecorded": kept})
        return 0
    click.echo(f"{t.name}: {t.title}")
    click.echo(f"state: {t.status}" + (f" (attempt {t.attempt}" + (f", {t.claimed_by})" if t.claimed_by else ")")
                                       if t.attempt else "")
               + (bus.why_cancelled(t) if t.status == "cancelled" else ""))
    if t.agent:
        click.echo(f"for: {t.agent}")
    if t.depends:
        click.echo("after: " + bus.after(t, bus.all()))
    click.echo(f"spec: {t.path}")
    if t.result:
        click.echo(f"result: {t.result}")
    for k in kept:
        click.echo(f"kept aside: {k}")
    if t.error:
        warn(t.error)
    if t.body:
        click.echo("\n" + t.body.rstrip())
    return 0


@task.command("claim", cls=FleetCommand)
@click.option("--agent", metavar="NAME", shell_complete=completers.agents,
              help="Who claims (default: $FLEET_AGENT, or this worktree's agent).")
@click.option("--lease", metavar="DURATION", help="How long the claim holds without renewal (default: bus.lease).")
@click.option("--wait", is_flag=True, help="Block until a task can be claimed (woken by file changes, not by polling).")
@click.option("--json", "as_json", is_flag=True, help="Print the claimed task as JSON.")
def task_claim(agent: str | None, lease: str | None, wait: bool, as_json: bool) -> int:
    """Claim the next task: open, assigned to this agent or to nobody, its dependencies done; by
    priority, then id. Prints its id first. Exit status 1 when nothing can be claimed."""
    fleet = load()
    who = brief.worker(fleet, agent)
    bus = fleet.bus()
    seconds = parse_duration(lease) if lease else None
    # (--wait claims from its first try on: across machines, a remote away at the start is waited out too)
    t = bus.claim_waiting(who, seconds, warn) if wait else bus.claim(who, seconds)
    if t is None:
        raise FleetError(f"no task can be claimed by '{who}' now",
                         "git fleet-task list shows what is open; --wait blocks until one can be claimed")
    brief.rewrite_briefs(fleet, [who])
    if as_json:
        print_json(t.as_dict())
    else:
        click.echo(f"{t.name}\t{t.title}\t{t.path}")
    return 0


holder_option = click.option("--agent", metavar="NAME", shell_complete=completers.agents,
                             help="Who holds it (default: $FLEET_AGENT, or this worktree's agent).")


def _who_and_id(agent: str | None, id: str) -> tuple[Fleet, Bus | RemoteBus, str, int]:
    fleet = load()
    return fleet, fleet.bus(), brief.worker(fleet, agent), parse_id(id)


def _spec_broken(t: Task, what: str) -> None:
    """Its holder went on with a task whose spec was broken by hand after the claim: say where."""
    if t.error:
        warn(t.error)
        hint(f"{what}; the spec of {t.name} was changed by hand after it was claimed and cannot be read: "
             "the orchestrator fixes that line (git fleet-doctor lists it too)")


@task.command("renew", cls=FleetCommand)
@click.argument("id", shell_complete=completers.claimed_tasks)
@holder_option
@click.option("--lease", metavar="DURATION", help="The new lease, from now (default: bus.lease).")
def task_renew(id: str, agent: str | None, lease: str | None) -> int:
    """Extend the lease of a task this agent holds."""
    fleet, bus, who, tid = _who_and_id(agent, id)
    _spec_broken(bus.renew(tid, who, parse_duration(lease) if lease else None), "the lease is renewed all the same")
    return 0


@task.command("release", cls=FleetCommand)
@click.argument("id", shell_complete=completers.claimed_tasks)
@holder_option
def task_release(id: str, agent: str | None) -> int:
    """Give a claimed task back, for anyone to claim again."""
    fleet, bus, who, tid = _who_and_id(agent, id)
    _spec_broken(bus.release(tid, who), "it is released all the same; no worker claims it until the spec is fixed")
    return 0


@task.command("done", cls=FleetCommand)
@click.argument("id", shell_complete=completers.claimed_tasks)
@holder_option
@click.option("--result-file", metavar="FILE", shell_complete=completers.files,
              help="The result, from a file, or - for standard input.")
def task_done(id: str, agent: str | None, result_file: str | None) -> int:
    """Finish a task this agent holds: write results/task-NNN-result.md (atomically) and mark it done.

    In a fleet across machines, the agent's branch is first published to the fleet's remote
    (where this machine holds the agent), so that the orchestrator merges the work the result
    speaks of; a branch the remote refuses is said, and the result recorded all the same.

    A result that cannot be recorded (the task was cancelled, or the lease lapsed and another
    worker took it over) is refused, exit status 1, and kept at
    results/task-NNN-unrecorded-AGENT-K.md, never dropped. A spec broken by hand after the claim
    does not stop the holder: the result is recorded, with a warning naming the file and line.
    """
    fleet, bus, who, tid = _who_and_id(agent, id)
    result = read_input(result_file) or "Done."
    if who in fleet.config.agents:  # (a fleet across machines: its work on the remote, for the merge)
        unpublished = publish.now(fleet.repo, who, fleet.config.agents[who].branch)
        if unpublished:
            warn(f"{fleet.config.agents[who].branch} is not on the fleet's remote: {unpublished}")
    t = bus.finish(tid, who, result)
    brief.rewrite_briefs(fleet, [who])
    click.echo(str(t.result))
    _spec_broken(t, "the result is recorded all the same")
    return 0


@task.command("fail", cls=FleetCommand)
@click.argument("id", shell_complete=completers.claimed_tasks)
@click.option("--reason", required=True, help="Why it failed; recorded as the result.")
@holder_option
def task_fail(id: str, reason: str, agent: str | None) -> int:
    """Give up on a task this agent holds: record it as failed, with the reason (kept aside, as
    with done, if it cannot be recorded)."""
    fleet, bus, who, tid = _who_and_id(agent, id)
    t = bus.finish(tid, who, reason, failed=True)
    brief.rewrite_briefs(fleet, [who])
    click.echo(str(t.result))
    _spec_broken(t, "the failure is recorded all the same")
    return 0


def _orchestrators(what: str) -> Bus | RemoteBus:
    """The bus, for a command only the orchestrator runs: an agent gives its own task back or
    ends it, but does not end or delete the orchestrator's tasks."""
    fleet = load()
    try:
        fleet.refuse_agents(what)
    except FleetError as e:
        raise FleetError(e.message, f"run it in the main worktree ({fleet.main}), outside any agent's session; an "
                         "agent gives a task it holds back with git fleet-task release ID, or ends it with git "
                         "fleet-task fail ID --reason TEXT") from None
    return fleet.bus()


@task.command("cancel", cls=FleetCommand)
@click.argument("id", shell_complete=completers.unended_tasks)
@click.option("--reason", metavar="TEXT", help="Why; recorded as its result, and told to its holder.")
def task_cancel(id: str, reason: str | None) -> int:
    """End a task that is open or claimed: it is recorded as cancelled (results/task-NNN-result.md,
    status: cancelled, with the reason) and no worker claims it again. The orchestrator's only.

    Its holder, if any, is refused from then on: renew, release, done and fail say that it was
    cancelled and why, and a result it sends is kept at results/task-NNN-unrecorded-AGENT-K.md,
    never dropped (git fleet-task show lists it); its branch and worktree are not touched. A done
    that races the cancel is settled as any result is: the first one linked into place wins, the
    other is told so. Tasks that depend on it stay blocked, as after a failure: they are named,
    to be cancelled too or freed by editing their depends. A task that is done or failed already
    is refused.
    """
    bus = _orchestrators("cancel a task")
    t = bus.cancel(parse_id(id), reason)
    click.echo(str(t.result))
    waiting = bus.dependents(t.id)
    if waiting:
        warn(f"{', '.join(w.name for w in waiting)} depend{'s' if len(waiting) == 1 else ''} on {t.name} and "
             "cannot be claimed now")
        hint(f"cancel {'them' if len(waiting) > 1 else 'it'} too (git fleet-task cancel ID), or take {t.name} out "
             "of the depends: line of " + ", ".join(str(w.path) for w in waiting))
    return 0


@task.command("rm", cls=FleetCommand)
@click.argument("id", shell_complete=completers.removable_tasks)
def task_rm(id: str) -> int:
    """Delete a task added by mistake: its spec goes. Only a task that nobody has ever claimed and
    that no unfinished task depends on; any other is cancelled instead (git fleet-task cancel),
    so its record stays. Its id is not given out again. The orchestrator's only.

    It ends as any task does, once: results/task-NNN-result.md, status: removed, is linked into
    place before the spec goes, so a cancel racing it either lands first (then rm is refused)
    or is refused itself. An rm killed halfway leaves nothing stuck: the task is as it was, or
    removed (the next rm, or any listing, deletes the spec left behind)."""
    t = _orchestrators("remove a task").remove(parse_id(id))
    click.echo(f"removed {t.name} ({t.path})")
    return 0


@command()
def plan() -> int:
    """Regenerate master_plan.md from the bus.

    Writes the tasks by state (claimed, open, blocked by dependencies, failed, done), with links
    to their specs and results, and a count per agent, between two marker lines. Everything
    outside the markers is the orchestrator's own and is kept as it is.
    """
    click.echo(str(load().bus().write_plan()))
    return 0
