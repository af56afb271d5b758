"""Checkpoints and merging: git fleet-merge, -checkpoint (and checkpoint add), -status with its
conflict forecast, and -sync."""

from __future__ import annotations

import sys
import time

import click

from .. import agents as fleet_agents
from .. import forecast
from .. import merge as merging
from .. import sync as syncing
from ..merge import Batch
from . import CONTEXT, FleetCommand, FleetGroup, command, completers, hint, note, print_json, warn
from .output import age, load, machine, stale_hint, table


@command()
@click.argument("agents", nargs=-1, shell_complete=completers.agents)
@click.option("--checkpoint", "checkpoint", metavar="NAME", shell_complete=completers.checkpoints,
              help="Merge the agents of this declared checkpoint, in its order, and tag the round (fleet/NAME, then "
                   "fleet/NAME@2, ...).")
@click.option("-n", "--dry-run", is_flag=True, help="Say what would be merged and what would conflict; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print what would be merged (or the result) as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Say what was merged.")
def merge(agents: tuple[str, ...], checkpoint: str | None, dry_run: bool, as_json: bool, verbose: bool) -> int:
    """Merge agent branches into the base, all or nothing.

    Merges the agents of --checkpoint NAME, or the named AGENTS in the order given, or every
    agent with new commits, into the base branch: one --no-ff merge commit per agent, first
    parent the base, second the agent's tip. Agents with nothing new are passed over.

    Every merge is made in memory first, and every commit of every agent since the base is
    checked against its zone (so a commit made with --no-verify is caught here). If any agent
    would conflict or break its zone, nothing changes: the error names each agent, each path
    and the other side. Otherwise the base moves once, atomically, a checked-out base work tree
    follows (keeping local changes, as git merge does), and a checkpoint is tagged and logged in
    $GIT_COMMON_DIR/fleet/checkpoints.log. A checkpoint is merged round after round, at every
    natural breakpoint: its first round is tagged fleet/NAME, the next ones fleet/NAME@2,
    fleet/NAME@3, ...; a round with nothing new merges nothing.

    A checkpoint's test runs on the merged result in a scratch worktree, within its timeout
    (timeout = "30m" in [checkpoints.NAME]), ended with everything it started when it is done or
    the merge stops. A process killed midway, git included, leaves the old state or the new one:
    the next git fleet command in the main worktree finishes or undoes a merge killed while the
    base moved, and says so. Exit status 0 when the merge succeeds (or, with --dry-run, would
    succeed), 1 when it does not.
    """
    fleet = load(None if dry_run else "merge into the base")
    p = merging.merge(fleet, list(agents), checkpoint, dry_run=dry_run)
    for w in p.warnings:
        warn(w)
    if as_json:
        print_json(p.as_dict())
    elif dry_run:
        _print_batch(p)
    elif verbose or sys.stderr.isatty():  # one line per result on a terminal, as git's porcelain does
        for s in p.steps:
            note(f"merged {s.agent.branch} ({s.ahead} commit(s)) into {p.base}")
        tag = p.checkpoint.tag(p.rounds + 1) if p.checkpoint is not None else ""
        if p.checkpoint is not None and p.new is not None and not any(tag in w for w in p.warnings):
            note(f"tagged {p.checkpoint.tag(p.rounds + 1)}: checkpoint {p.checkpoint.name}, round {p.rounds + 1}")
        elif p.new is None:
            note(_nothing(p))
    if dry_run and not p.ok:
        if not as_json:
            click.echo(p.failure().render(), err=True)
        return 1
    return 0


def _nothing(p: Batch) -> str:
    what = f"checkpoint {p.checkpoint.name}" if p.checkpoint else "merge"
    since = f" (round {p.rounds} is merged)" if p.checkpoint and p.rounds else ""
    return f"{what} into {p.base}: nothing to merge{since}"


def _print_batch(p: Batch) -> None:
    what = f"checkpoint {p.checkpoint.name}" if p.checkpoint else "merge"
    if p.ok and not p.new:
        click.echo(_nothing(p))
    else:
        round_ = f" (round {p.rounds + 1})" if p.checkpoint and p.ok and p.rounds else ""
        click.echo(f"{what} into {p.base}: " + (f"would succeed{round_}" if p.ok else "would fail"))
    rows = []
    for s in p.steps:
        if s.ok:
            state = "clean"
        else:
            state = "; ".join([f"conflict in {path} with {', '.join(w)}" for path, w in s.conflicts.items()]
                              + [f"{(v.commit or '')[:12]} out of zone: {v.path}" for v in s.violations])
        rows.append([s.agent.name, f"{s.ahead} commit(s)", state])
    rows += [[name, "nothing new", ""] for name in p.skipped]
    table([["  " + r[0], r[1], r[2]] for r in rows])


@click.group(cls=FleetGroup, context_settings=CONTEXT, invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the checkpoints as JSON.")
@click.pass_context
def checkpoint(ctx: click.Context, as_json: bool) -> int:
    """List the declared checkpoints and whether each is ready to merge.

    For each checkpoint of .gitfleet.toml ([checkpoints.NAME] agents = [...]): its state and,
    per agent, the commits it is ahead of the base, its uncommitted files, out-of-zone changes
    and the paths that would conflict. The state is what `git fleet-merge --checkpoint NAME`
    would do now: "ready" (the next round would merge), "blocked" (it would fail: a conflict or
    an out-of-zone commit), "merged" (every agent's work is in the base; the last round and its
    tag are named) or "nothing new" (never merged, and nothing to merge).

    `git fleet-checkpoint add NAME --agent A --agent B --test CMD` declares one.
    """
    if ctx.invoked_subcommand is not None:
        return 0
    rows = forecast.checkpoints(load())
    if as_json:
        print_json(rows)
        return 0
    for row in rows:
        facts = [f"round {row['rounds']}, tag {row['tag']}"] if row["state"] == "merged" else []
        if row["state"] == "ready" and row["rounds"]:
            facts.append(f"round {row['rounds'] + 1}")
        if row["test"]:
            facts.append(f"test: {row['test']}")
        click.echo(f"{row['checkpoint']}: {row['state']}" + (f" ({'; '.join(facts)})" if facts else ""))
        per_agent = []
        for a in row["agents"]:
            facts = [f"{a['ahead']} ahead"]
            if a["dirty"]:
                facts.append(f"{a['dirty']} uncommitted")
            if a["dirty"] is None:
                facts.append("no worktree")
            if a["out_of_zone"]:
                facts.append("out of zone: " + ", ".join(a["out_of_zone"]))
            if a["conflicts"]:
                facts.append("would conflict: " + ", ".join(a["conflicts"]))
            per_agent.append(["  " + a["agent"], ", ".join(facts)])
        table(per_agent)
    return 0


@checkpoint.command("add", cls=FleetCommand)
@click.argument("name")
@click.option("--agent", "agents", multiple=True, required=True, metavar="AGENT", shell_complete=completers.agents,
              help="An agent it merges; repeat for more, in merge order.")
@click.option("--test", metavar="COMMAND", help="A command the merged result must pass before the base moves.")
@click.option("--timeout", metavar="DURATION", help="How long the test may take (default: 30m).")
def checkpoint_add(name: str, agents: tuple[str, ...], test: str | None, timeout: str | None) -> int:
    """Declare a checkpoint: the agents it merges, in order, and the test the result must pass.

    Writes [checkpoints.NAME] in .gitfleet.toml (keeping your comments), as git fleet-add does
    for agents. Merge it with git fleet-merge --checkpoint NAME, round after round.
    """
    cp = fleet_agents.declare_checkpoint(load(), name, list(agents), test, timeout)
    if sys.stderr.isatty():
        note(f"declared checkpoint '{cp.name}': {', '.join(cp.agents)}" + (f"; test: {cp.test}" if cp.test else ""))
    return 0


@command()
@click.option("--json", "as_json", is_flag=True, help="Print the rows and the forecast as JSON.")
def status(as_json: bool) -> int:
    """Show every agent and the conflicts coming before a checkpoint.

    One row per agent: branch, commits ahead of and behind the base, uncommitted files,
    out-of-zone changes (committed or not) and the age of its last commit. Then the conflict
    forecast: which agents' branches would conflict with the base or with each other if merged
    now, with the paths, all made in memory in one git merge-tree process; and a merge order
    that integrates the most agents without conflict.
    """
    data = forecast.status(load(), fetch=True)
    if as_json:
        print_json(data)
        return 0
    def num(v: object) -> str:
        return "-" if v is None else str(v)
    spans = "remote" in data
    rows = [["agent", "branch", "ahead", "behind", "dirty", "out of zone", "last commit", *(["machine"] if spans else [])]]
    for r in data["agents"]:
        rows.append([r["agent"], r["branch"], num(r["ahead"]), num(r["behind"]), num(r["dirty"]),
                     ", ".join(r["out_of_zone"]) or "-", age(r["last_commit"]), *([machine(r)] if spans else [])])
    table(rows)
    for r in data["agents"]:
        if r.get("unpublished"):
            warn(f"{r['agent']}'s last commits are not on '{data['remote']['name']}': {r['unpublished']}")
    if spans and data["remote"]["stale"]:
        warn(data["remote"]["stale"])
        fetched = data["remote"]["fetched_age"]
        hint(stale_hint(None if fetched is None else time.time() - fetched))
    if data["conflicts"]:
        click.echo("would conflict if merged now:")
        for c in data["conflicts"]:
            click.echo(f"  {c['agents'][0]} and {c['agents'][1]}: {', '.join(c['paths'])}")
    if data["merge_order"] or data["held_back"]:
        line = "merge order: " + (", ".join(data["merge_order"]) or "-")
        if data["held_back"]:
            line += f" (then {', '.join(data['held_back'])}, after git fleet-sync)"
        click.echo(line)
    return 0


@command()
@click.argument("agents", nargs=-1, shell_complete=completers.agents)
@click.option("--json", "as_json", is_flag=True, help="Print what was done for each agent as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Say what was done for each agent.")
def sync(agents: tuple[str, ...], as_json: bool, verbose: bool) -> int:
    """Bring the base's new commits into agent branches, after a checkpoint.

    For each named agent (every agent by default) whose branch is behind the base: merge the
    base into it (fleet.sync = "merge", the default), or rebase it onto the base (fleet.sync =
    "rebase", only for branches no remote has; a published branch is merged instead). The
    agent's worktree follows. An agent whose worktree has uncommitted work, or whose branch
    would conflict, is refused and left exactly as it was; the others are synced. Exit status
    1 when any agent was refused.
    """
    results = syncing.sync(load("sync agents' branches"), list(agents))
    if as_json:
        print_json([{"agent": r.agent, "action": r.action, "why": r.why} for r in results])
    refused = [r for r in results if r.action == "refused"]
    if not as_json:
        for r in results:
            if r.action == "refused":
                click.echo(f"error: {r.agent}: not synced: {r.why}", err=True)
            elif verbose or sys.stderr.isatty():  # one line per agent on a terminal
                note(f"{r.agent}: {r.action}" + (f" {r.why}" if r.why else ""))
        for said in dict.fromkeys(r.hint for r in refused if r.hint):
            hint(said)
        if any("uncommitted" in r.why or "conflict" in r.why for r in refused):
            hint("commit the agent's work first; a conflict is best resolved by the agent in its own "
                 "worktree (git merge <base>)")
    return 1 if refused else 0
