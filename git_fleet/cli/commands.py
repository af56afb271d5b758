"""The git fleet-* commands: parse, call one core function, print."""

from __future__ import annotations

import os
import shlex
import sys
from typing import Any

import click

from .. import __version__, brief, completion, forecast, ownership
from .. import agents as fleet_agents
from .. import init as setup
from .. import merge as merging
from .. import sync as syncing
from ..check import quote
from ..fleet import Fleet, Report
from ..merge import Plan
from . import CONTEXT, FleetCommand, FleetGroup, command, hint, note, print_json, warn

ZONE_HELP = "A gitignore pattern the agent owns, relative to the repository root; repeat for more (the last match decides)."


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


def _report(report: Report, verbose: bool) -> None:
    for w in report.warnings:
        warn(w)
    if verbose:
        for n in report.notes:
            note(n)


def _table(rows: list[list[str]]) -> None:
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)) + ("  " if widths else "") + r[-1])


@command()
@click.option("--base", metavar="BRANCH", help="The branch agents start from (default: the current branch).")
@click.option("--server", is_flag=True, help="Install the pre-receive check (for a bare repository that agents push to).")
@click.option("--uninstall", is_flag=True, help="Remove the fleet's hooks and put back the hooks they chained.")
@click.option("--orchestrator-key", "orchestrator_keys", multiple=True, metavar="FILE", shell_complete=completion.files,
              help="With --server: the SSH public key whose signed pushes (git push --signed) are the orchestrator's.")
@click.option("--agent-key", "agent_keys", multiple=True, metavar="AGENT=FILE",
              help="With --server: the SSH public key an agent's pushes to its branch must be signed with.")
@click.option("--base-push", type=click.Choice(["merges", "signed", "any"]),
              help="With --server: what moves the base (default: signed with an orchestrator key, else merges).")
@click.option("-i", "--interactive", is_flag=True, help="Walk through the launch checklist: agents and zones proposed from the top-level directories, a checkpoint, then git fleet-doctor.")
@click.option("-v", "--verbose", is_flag=True, help="Say what was done.")
@click.version_option(__version__, "--version", message="git-fleet %(version)s")
def init(base: str | None, server: bool, uninstall: bool, orchestrator_keys: tuple[str, ...],
         agent_keys: tuple[str, ...], base_push: str | None, interactive: bool, verbose: bool) -> int:
    """Set up a repository for a fleet of agents.

    Writes a commented .gitfleet.toml in the main worktree if there is none (base branch,
    branch prefix, worktree location, agent limits) and installs the pre-commit, pre-merge-commit, pre-push
    and pre-receive hooks in the repository's common hooks directory, so that every linked
    worktree runs them. A hook that was there before is kept as HOOK.pre-fleet and runs
    first. Running it again refreshes the hooks and keeps the configuration.

    Where core.hooksPath points inside the checkout (husky) or outside this repository's
    own config, nothing is written there: the exact line to add is printed instead.

    In a bare repository (or with --server) it installs the pre-receive hook, which reads
    the zones from the base branch's committed .gitfleet.toml; --base names that branch
    when HEAD does not. The server also keeps the base and every agent's branch from being
    deleted or force-pushed, refuses trees git cannot check out (receive.fsckObjects), and
    moves the base only by merges of agent branches, each held to its agent's zone. A server
    cannot tell pushers apart by itself: with --orchestrator-key, pushes signed with that key
    (git push --signed, gpg.format = ssh) are the orchestrator's, which alone then move the
    base; with --agent-key NAME=FILE, pushes to that agent's branch must be signed by it.
    --base-push chooses what moves the base: merges, signed, or any push.

    In the main worktree it also sets branch.<base>.mergeOptions = --no-ff, so that a plain
    `git merge` of an agent's branch makes a merge commit and the pre-merge-commit hook checks
    it (a fast-forward runs no hook). `git merge --squash` then needs --ff.

    --interactive then walks through the rest of the launch checklist: it proposes one agent
    per top-level directory (or per part of the one directory that holds nearly everything),
    which you accept or edit, adds them, offers a checkpoint that merges them all, and ends
    with git fleet-doctor's report.
    """
    if interactive and (server or uninstall):
        from ..errors import UsageError

        raise UsageError("--interactive sets up agents; it does not go with --server or --uninstall")
    pairs = []
    for spec in agent_keys:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            from ..errors import UsageError

            raise UsageError(f"--agent-key {spec}: give AGENT=FILE", "e.g. --agent-key backend=~/.ssh/backend.pub")
        pairs.append((name, path))
    result = setup.init(base=base, server=server, uninstall=uninstall, orchestrator_keys=orchestrator_keys,
                     agent_keys=pairs, base_push=base_push)
    _report(result.report, verbose or result.config_path is None)  # (a server's: say what it holds)
    h = result.hooks
    for line in h.manual:
        hint(line)
    if h.manual:
        warn(f"core.hooksPath is {h.directory}; the fleet did not write there")
    if result.created and result.config_path is not None:
        # what to commit: other clones and a server read the committed copies
        note(f"wrote {result.config_path}: commit it (git add {result.config_path.name} && git commit), as other "
             "clones and a server read the committed copy; commit the bus too once it has tasks (tasks/, results/, "
             "master_plan.md; claims stay out, in tasks/.state)")
    if verbose:
        verb = "removed" if uninstall else "installed"
        if h.installed:
            note(f"{verb} hooks in {h.directory}: {', '.join(h.installed)}")
        for name in h.chained:
            note(f"{'restored' if uninstall else 'chained'} your existing {name} hook ({name}.pre-fleet)")
    if not interactive:
        return 0
    try:
        return _walk_through()
    except click.Abort:
        if sys.stdin.isatty():
            raise  # (Ctrl-C on a terminal: interrupted)
        from ..errors import UsageError

        # its standard input ran out before the questions did: no terminal, no answers
        undone = result.created and _undo_fresh_init(result)
        raise UsageError("--interactive ran out of answers on its standard input (there is no terminal to ask on); "
                         + ("nothing was set up" if undone else f"{result.config_path} is kept, with what was answered"),
                         "run it in a terminal, or give every answer on standard input, or set up without it: "
                         "git fleet-init, then git fleet-add NAME --zone ...") from None


def _undo_fresh_init(result: Any) -> bool:
    """Take out a configuration this init wrote, and its hooks, if no agent was added since."""
    fleet = load()
    if fleet.config.agents:
        return False
    setup.forget(fleet)
    return True


def _walk_through() -> int:
    """The interactive part of init: agents and zones, a checkpoint, then the doctor's report."""
    from ..errors import FleetError

    fleet = load()
    click.echo(f"{fleet.config_path}: base branch {fleet.config.base}")
    proposals = setup.propose_zones(fleet)
    if proposals:
        click.echo("Directories: " + ", ".join(f"{z} ({n} file{'s' if n != 1 else ''})" for _, z, n in proposals))
    default = " ".join(f"{name}={zone}" for name, zone, _ in proposals)
    answer = click.prompt("Agents, as NAME=PATTERN[,PATTERN...] separated by spaces (- for none)",
                          default=default or "-", show_default=True)
    added = []
    for spec in answer.split() if answer.strip() != "-" else []:
        name, sep, patterns = spec.partition("=")
        if not sep or not patterns:
            warn(f"skipped '{spec}': write NAME=PATTERN")
            continue
        try:
            fleet_agents.add(fleet, name, patterns.split(","))
            added.append(name)
            click.echo(f"added {name}: {patterns} (worktree {fleet.worktree_of(fleet.config.agent(name))})")
        except FleetError as e:
            warn(f"skipped '{name}': {e.message}")
    if added and not fleet.config.checkpoints:
        cp = click.prompt("A checkpoint that merges them all, in this order (- for none)", default="phase-1")
        if cp.strip() != "-":
            fleet_agents.declare_checkpoint(fleet, cp.strip(), added)
            click.echo(f"declared checkpoint {cp.strip()}: {' '.join(added)}  (git fleet-merge --checkpoint {cp.strip()})")
    from ..doctor import diagnose

    click.echo("\nThe checklist (git fleet-doctor):")
    items = diagnose(fleet)
    _print_checks(items)
    click.echo("\nNext: git fleet-up starts the agents in tmux; git fleet-task add gives them work.")
    return 0


@command()
@click.argument("name")
@click.option("--zone", "zones", multiple=True, required=True, metavar="PATTERN", help=ZONE_HELP)
@click.option("--branch", metavar="BRANCH", help="The agent's branch (default: <branch_prefix>NAME); an existing branch is adopted as it is.")
@click.option("--path", "path", metavar="DIR", shell_complete=completion.directories, help="Where the worktree goes, in this clone (default: fleet.worktree, ../REPO-NAME).")
@click.option("--base", metavar="REF", help="What a new branch starts from (default: fleet.base).")
@click.option("--allow-overlap", is_flag=True, help="Accept a zone that shares paths with another agent's.")
@click.option("--force", is_flag=True, help="Go beyond the agent limit (max_agents).")
@click.option("-v", "--verbose", is_flag=True, help="Say what was done.")
@click.option("--session", metavar="NAME", help="The agent's session name (default: the agent's name).")
@click.option("--model", metavar="MODEL", help="The model its command runs (default: fleet.model).")
@click.option("--command", "command_", metavar="TEMPLATE", help="How its session starts (default: fleet.command).")
@click.option("--resume", metavar="TEMPLATE", help="How its session resumes (default: fleet.resume).")
def add(name: str, zones: tuple[str, ...], branch: str | None, path: str | None, base: str | None,
        allow_overlap: bool, force: bool, verbose: bool, session: str | None, model: str | None,
        command_: str | None, resume: str | None) -> int:
    """Add an agent: its zone, its branch and its worktree.

    Registers NAME in the orchestrator's .gitfleet.toml, creates its branch from the base
    (or adopts an existing --branch as it is) and checks it out in a worktree of its own.
    It takes effect at once: the next commit in that worktree is checked against the zone.

    A zone is a list of gitignore patterns. A zone that shares a path with another agent's
    is refused, naming the agent and the path, unless --allow-overlap. More than 7 agents
    draws a warning; more than 10 is refused unless --force. Nothing is left behind when
    it fails: no branch, no worktree, no half-written configuration.

    Run it in the main worktree: an agent cannot add agents or widen its own zone.
    """
    _agent, report = fleet_agents.add(load(), name, zones, branch=branch, path=path, base=base, allow_overlap=allow_overlap,
                                force=force, session={"session": session, "model": model, "command": command_,
                                                      "resume": resume})
    _report(report, verbose or sys.stderr.isatty())  # what it made, on a terminal as git's porcelain does
    return 0


@command()
@click.argument("name", shell_complete=completion.agents)
@click.option("--force", is_flag=True, help="Remove even with uncommitted work or unmerged commits (the branch is kept).")
@click.option("--keep-branch", is_flag=True, help="Keep the agent's branch even when it is fully merged.")
@click.option("-v", "--verbose", is_flag=True, help="Say what was done.")
def rm(name: str, force: bool, keep_branch: bool, verbose: bool) -> int:
    """Remove an agent: its worktree and its registration.

    Refuses while the worktree has uncommitted or untracked work, or while the branch has
    commits the base does not have, unless --force. A fully merged branch is deleted; a
    branch with unmerged commits is always kept, so --force never loses commits.
    """
    _report(fleet_agents.remove(load(), name, force=force, keep_branch=keep_branch), verbose)
    return 0


@command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, one object per agent.")
def list_(as_json: bool) -> int:
    """List the agents: name, branch, worktree, zone and state.

    The state is "ok", or what is wrong: a missing worktree or branch, or a worktree that
    is on another branch than the agent's.
    """
    rows = fleet_agents.describe(load())
    if as_json:
        print_json(rows)
        return 0
    _table([[r["agent"], r["branch"], r["worktree"], "  ".join(r["zone"]) + ("" if r["state"] == "ok" else f"  [{r['state']}]")]
            for r in rows])
    return 0


@command()
@click.argument("paths", nargs=-1, required=True, shell_complete=completion.files)
@click.option("--json", "as_json", is_flag=True, help="Print an object mapping each path to the list of its owners.")
def who(paths: tuple[str, ...], as_json: bool) -> int:
    """Print the agent(s) that own each PATH, and the pattern that decides.

    Paths are relative to the current directory and need not exist. A path no agent owns
    belongs to the orchestrator. For a directory (one in the work tree, or in the base), it
    says who owns the files inside it, with how many each: the directory itself is no one's.
    """
    fleet = load()
    result: dict[str, Any] = {}
    for p in paths:
        rel = ownership.repo_path(fleet, p)
        inside = ownership.owners_inside(fleet, rel) if os.path.isdir(p) or ownership.has_directory(fleet, rel) else None
        result[p] = (ownership.owners(fleet, rel), inside)
    if as_json:
        print_json({p: sorted(n for n in inside if n) if inside is not None else [name for name, _ in owners]
                    for p, (owners, inside) in result.items()})
        return 0
    for p, (owners, inside) in result.items():
        if inside is not None:
            who_ = ", ".join(f"{name or 'the orchestrator'} ({count} file{'s' if count != 1 else ''})"
                             for name, count in inside.items()) or "no files inside yet"
            click.echo(f"{quote(p.rstrip('/') + '/')}: {who_}")
            continue
        who_ = ", ".join(f"{name} ({pat.text})" for name, pat in owners) or "(no agent: the orchestrator's)"
        click.echo(f"{quote(p)}: {who_}")
    return 0


@command()
@click.option("--json", "as_json", is_flag=True, help="Print the zones and overlaps as JSON.")
@click.option("--approve", is_flag=True, help="Approve the zones as .gitfleet.toml has them now, after a hand edit.")
def zones(as_json: bool, approve: bool) -> int:
    """Print the zone table and any overlaps between zones.

    An overlap is shown with one path that both agents own. Overlaps are looked for among
    the base branch's files and paths made from the patterns themselves.

    A merge counts only zones the person approved: those a fleet command wrote, or the base
    branch's committed .gitfleet.toml. After editing the zones by hand, --approve shows what
    changed and approves it (a merge on a terminal asks instead); an agent cannot.
    """
    fleet = load()
    if approve:
        changed = fleet_agents.approve_zones(fleet)
        for line in changed:
            note(line)
        note("approved the zones in " + str(fleet.config_path) if changed else "the zones were approved already")
    overlaps = ownership.overlaps(fleet)
    agents = fleet.config.agents
    if as_json:
        print_json({"zones": {n: list(a.zone) for n, a in agents.items()},
                    "overlaps": [{"agents": [a, b], "example": ex} for a, b, ex in overlaps]})
        return 0
    _table([[n, "  ".join(a.zone)] for n, a in agents.items()])
    if overlaps:
        click.echo("overlaps:")
        for a, b, ex in overlaps:
            click.echo(f"  {a} and {b}: both own {ex}")
    return 0


@command()
@click.argument("agents", nargs=-1, shell_complete=completion.agents)
@click.option("--checkpoint", "checkpoint", metavar="NAME", shell_complete=completion.checkpoints, help="Merge the agents of this declared checkpoint, in its order, and tag the round (fleet/NAME, then fleet/NAME@2, ...).")
@click.option("-n", "--dry-run", is_flag=True, help="Say what would be merged and what would conflict; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan (or the result) as JSON.")
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
        _print_plan(p)
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


def _nothing(p: Plan) -> str:
    what = f"checkpoint {p.checkpoint.name}" if p.checkpoint else "merge"
    since = f" (round {p.rounds} is merged)" if p.checkpoint and p.rounds else ""
    return f"{what} into {p.base}: nothing to merge{since}"


def _print_plan(p: Plan) -> None:
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
    _table([["  " + r[0], r[1], r[2]] for r in rows])


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
        table = []
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
            table.append(["  " + a["agent"], ", ".join(facts)])
        _table(table)
    return 0



@checkpoint.command("add", cls=FleetCommand)
@click.argument("name")
@click.option("--agent", "agents", multiple=True, required=True, metavar="AGENT", shell_complete=completion.agents,
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

def _age(stamp: int | None) -> str:
    if stamp is None:
        return "-"
    import time

    secs = max(0, int(time.time()) - stamp)
    for unit, size in (("day", 86400), ("hour", 3600), ("min", 60)):
        if secs >= size:
            n = secs // size
            return f"{n} {unit}{'s' if n > 1 and unit != 'min' else ''} ago"
    return f"{secs} s ago"


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
    data = forecast.status(load())
    if as_json:
        print_json(data)
        return 0
    def num(v: object) -> str:
        return "-" if v is None else str(v)
    rows = [["agent", "branch", "ahead", "behind", "dirty", "out of zone", "last commit"]]
    for r in data["agents"]:
        rows.append([r["agent"], r["branch"], num(r["ahead"]), num(r["behind"]), num(r["dirty"]),
                     ", ".join(r["out_of_zone"]) or "-", _age(r["last_commit"])])
    _table(rows)
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
@click.argument("agents", nargs=-1, shell_complete=completion.agents)
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


@command(name="set")
@click.argument("name", shell_complete=completion.agents)
@click.option("--zone", "zones", multiple=True, metavar="PATTERN", help="Replace the agent's zone; repeat for more patterns.")
@click.option("--allow-overlap", is_flag=True, help="Accept a zone that shares paths with another agent's.")
@click.option("--session", metavar="NAME", help="The agent's session name.")
@click.option("--model", metavar="MODEL", help="The model its command runs.")
@click.option("--command", "command_", metavar="TEMPLATE", help="How its session starts.")
@click.option("--resume", metavar="TEMPLATE", help="How its session resumes.")
def set_(name: str, zones: tuple[str, ...], allow_overlap: bool, session: str | None, model: str | None,
         command_: str | None, resume: str | None) -> int:
    """Change an agent's zone or session settings, with the same checks as git fleet-add.

    Command templates are run by sh, with these placeholders filled in, shell-quoted: {agent},
    {session}, {model}, {worktree}, {branch}, {zone}, {task} (its claimed task), {port}. The
    default is Claude Code: claude --name {session} --model {model}, resumed with
    claude --resume {session}. Presets for other agent CLIs:

    \b
      Codex:   --command 'codex --model {model}'      --resume 'codex resume --last'
      Aider:   --command 'aider --model {model}'      --resume 'aider --model {model} --restore-chat-history'
      Gemini:  --command 'gemini --model {model}'     --resume 'gemini --model {model}'
      Script:  --command './agent.sh {task}'
    """
    fleet_agents.set_agent(load(), name, zone=zones, allow_overlap=allow_overlap,
               session={"session": session, "model": model, "command": command_, "resume": resume})
    return 0


@click.command(cls=FleetCommand, context_settings={**CONTEXT, "ignore_unknown_options": True,
                                                   "allow_interspersed_args": False})
@click.argument("name", shell_complete=completion.agents)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def run(name: str, argv: tuple[str, ...]) -> int:
    """Run a command in an agent's worktree with the fleet environment, without tmux.

    The environment: FLEET_AGENT, FLEET_SESSION, FLEET_MODEL, FLEET_ZONE (one pattern a line),
    FLEET_BRANCH, FLEET_WORKTREE, FLEET_BUS, FLEET_TASK (its claimed task) and FLEET_BRIEF, plus
    the agent's own env. The brief, .fleet/brief.md in the worktree (ignored by git), is written
    first. Exit status: the command's.
    """
    args = list(argv[1:] if argv[:1] == ("--",) else argv)
    return brief.run(load("run commands in an agent's worktree"), name, args)


def _sessions(changes: str | None = None) -> Any:
    from ..sessions import Sessions

    return Sessions(load(changes))


@command()
@click.argument("agents", nargs=-1, shell_complete=completion.agents)
@click.option("--stagger", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Seconds between agents' starts (default: fleet.stagger).")
@click.option("--layout", type=click.Choice(["windows", "tiled"]),
              help="A tmux window per agent, or panes tiled in one window named fleet (default: fleet.layout).")
@click.option("--detach", is_flag=True, help="Neither attach to the tmux session nor switch to it.")
@click.option("--force", is_flag=True, help="Start more than max_agents agents.")
def up(agents: tuple[str, ...], stagger: float | None, layout: str | None, detach: bool, force: bool) -> int:
    """Start the fleet in tmux: one window (or pane) per agent, plus the orchestrator's.

    Creates (or reuses) one tmux session for the repository, with an orchestrator window in the
    main worktree and one window per agent (all, or the named ones), named after it, or with
    --layout tiled one pane per agent in a window named fleet, titled with the agent's name;
    each is started in its worktree, running its command (its resume command, if it has run before: after a
    reboot or a killed tmux server this brings the fleet back where it was) with the fleet
    environment (see git fleet-run). Starts are staggered against API rate limits. Agents
    already running are left alone. A command that exits at once is reported, naming the
    agent; the others are not affected.

    Outside tmux it attaches, inside tmux it switches; --detach, or no terminal, does neither.
    tmux's own TMUX_TMPDIR chooses the server, so fleets can be kept apart.
    """
    import sys

    from ..errors import FleetError

    fleet = load("start agents")
    chosen = [fleet.config.agent(n) for n in agents] if agents else list(fleet.config.agents.values())
    if len(chosen) > fleet.config.max_agents and not force:
        raise FleetError(f"refusing to start {len(chosen)} agents: the limit is {fleet.config.max_agents}",
                         "beyond 10 agents coordination costs exceed the benefits; pass --force to go ahead")
    if len(chosen) > fleet.config.warn_agents:
        warn(f"starting {len(chosen)} agents; beyond {fleet.config.warn_agents} coordination costs grow")
    from ..sessions import Sessions

    s = Sessions(fleet)
    # on a terminal, each start and each wait as it happens (a stagger of 20 s is long to sit through)
    result = s.up(chosen, fleet.config.stagger if stagger is None else stagger, layout,
                  tell=note if sys.stderr.isatty() else None)
    for name in result.running:
        note(f"{name}: already running")
    if result.failed:
        failed = result.failed.values()
        raise FleetError("\n".join(e.message for e in failed), "\n".join(dict.fromkeys(e.hint for e in failed if e.hint)))
    if not detach and sys.stdin.isatty() and sys.stdout.isatty():
        from .. import tmux

        tmux.attach(s.name)
    return 0


@command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def ps(as_json: bool) -> int:
    """Which agents are running in the fleet's tmux session, since when, their session name and model."""
    rows = _sessions().ps()
    if as_json:
        print_json(rows)
        return 0
    _table([["agent", "state", "since", "session", "model"]] +
           [[r["agent"], "running" if r["running"] else "stopped", _age(r["since"]) if r["since"] else "-",
             r["session"], r["model"]] for r in rows])
    return 0


@command()
@click.argument("agents", nargs=-1, shell_complete=completion.agents)
@click.option("--yes", is_flag=True, help="Do not ask before stopping agents that still run.")
def down(agents: tuple[str, ...], yes: bool) -> int:
    """Stop agents (all, or the named ones): Ctrl-C first, then their windows are closed.

    Asks first where an agent still runs, unless --yes; without a terminal to ask on, it refuses.
    """
    import sys

    from ..errors import FleetError

    s = _sessions("stop agents")
    names = list(agents) or list(s.fleet.config.agents)
    for n in names:
        s.fleet.config.agent(n)
    live = s.running(names)
    if live and not yes:
        if not sys.stdin.isatty():
            raise FleetError(f"still running: {', '.join(live)}", "pass --yes to stop them")
        if not click.confirm(f"stop {', '.join(live)}?", default=False):
            return 1
    s.down(names)
    if not agents and s.close_if_idle():
        note(f"closed tmux session {s.name}")
    return 0


@command()
@click.argument("agent", shell_complete=completion.agents)
def resume(agent: str) -> int:
    """Start an agent's resume command in its window (made if missing)."""
    s = _sessions("resume agents")
    s.resume(s.fleet.config.agent(agent))
    return 0


@command()
@click.argument("agent", required=False, shell_complete=completion.agents)
def attach(agent: str | None) -> int:
    """Attach to the fleet's tmux session (switch to it inside tmux), at AGENT's pane if given."""
    from .. import tmux
    from ..errors import FleetError

    s = _sessions()
    if agent:
        s.fleet.config.agent(agent)
    if not tmux.has_session(s.name):
        raise FleetError("the fleet is not running", "start it with git fleet-up")
    pane = s.pane(agent) if agent else None
    if agent and pane is None:
        raise FleetError(f"agent '{agent}' is not in the fleet's tmux session", f"start it with git fleet-up {agent}")
    tmux.attach(s.name, pane)
    return 0


@command()
@click.argument("directory", default="fleet-demo", metavar="[DIR]", type=click.Path(file_okay=False))
@click.option("--tmux", "in_tmux", is_flag=True, help="Show the agents in tmux panes, on a tmux server of the demo's own.")
@click.option("--keep", is_flag=True, help="With --tmux: leave its tmux server running, and say how to attach and end it.")
@click.option("--json", "as_json", is_flag=True, help="Say nothing as it goes; print what it did as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Say nothing as it goes, only errors.")
def demo(directory: str, in_tmux: bool, keep: bool, as_json: bool, quiet: bool) -> int:
    """Show the whole practice in a minute: a fleet of three stand-in agents on a small project.

    Builds a small project in DIR/shop (default ./fleet-demo; DIR must be new or empty, and
    everything the demo makes, the repository and every agent's worktree, lives under it), sets
    up a fleet on it with the public commands (init, three agents with zones, a checkpoint with
    its test, a task each on the bus), and runs three stand-in agents at once: scripted programs
    shipped with git-fleet that work as a coding agent does (read the brief, claim a task, edit,
    commit, write a result). One strays outside its zone, is refused by the commit hook, reads
    why and recovers. Then it shows git fleet-status with its forecast and merges the checkpoint,
    its test passing. No network, no API key, no agent CLI; nothing is left running. It narrates
    each step; --json or -q for scripts.
    """
    import time
    from pathlib import Path

    from .. import demo as demo_mod

    where = Path(directory).absolute()
    demo_mod.check_dir(where)
    if keep and not in_tmux:
        from ..errors import UsageError

        raise UsageError("--keep keeps the demo's tmux server: it goes with --tmux", "git fleet-demo --tmux --keep")
    if in_tmux:
        import shutil

        if shutil.which("tmux") is None:
            from ..errors import UsageError

            raise UsageError("--tmux needs tmux, which is not installed", "run the demo without --tmux")
    say = (lambda line: None) if as_json or quiet else click.echo
    run = demo_mod.Demo(where, tmux=in_tmux, keep=keep, say=say)
    import signal

    def stop_here(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # a closed terminal or a kill ends the demo as Ctrl-C does

    started = time.monotonic()
    old = {s: signal.signal(s, stop_here) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        out = run.go()
    except KeyboardInterrupt:
        running = run.step == "running the agents"
        run.stop(interrupted=True)
        click.echo(f"error: interrupted while {run.step}" + ("; the stand-in agents were stopped" if running else "")
                   + f"; what the demo made is in {where}", err=True)
        click.echo(f"hint: look at it there, or remove it: rm -rf {shlex.quote(str(where))}", err=True)
        return 130
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    kept = run.attach_hint()
    if as_json:
        print_json({"dir": out.dir, "repo": out.repo, "seconds": round(time.monotonic() - started, 1),
                    "agents": out.agents, "refused": out.refused, "merged": out.merged, "tag": out.tag,
                    "tmux": kept})
        return 0
    run.epilogue()
    if kept:
        click.echo(kept, err=quiet)  # with -q too: a server left running is always said
    return 0


ALL: dict[str, click.Command] = {"demo": demo, "init": init, "add": add, "rm": rm, "list": list_, "who": who, "zones": zones, "merge": merge,
       "checkpoint": checkpoint, "status": status, "sync": sync, "set": set_, "run": run, "up": up, "ps": ps,
                                 "down": down, "resume": resume, "attach": attach}


@click.group(cls=FleetGroup, context_settings=CONTEXT, invoke_without_command=True)
@click.version_option(__version__, "--version", message="git-fleet %(version)s")
@click.pass_context
def fleet(ctx: click.Context) -> None:
    """Run a fleet of coding agents on one repository without them trampling each other.

    Each agent works in a worktree and branch of its own and owns a zone of paths; commits
    outside the zone are rejected by hooks, by pushes and by servers. Every command is also
    `git fleet-NAME`; see `git help fleet-NAME`.
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


for _name, _cmd in ALL.items():
    fleet.add_command(_cmd, _name)



# -- the bus -------------------------------------------------------------------------------------------

def _body(text: str | None) -> str:
    if text is None:
        return ""
    if text == "-":
        import sys

        return sys.stdin.read()
    try:
        with open(text, encoding="utf-8") as fh:
            return fh.read()
    except OSError as e:
        from ..errors import UsageError

        raise UsageError(f"cannot read {text}: {e.strerror}") from None


def _task_line(t: Any) -> list[str]:
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
@click.option("--agent", metavar="NAME", shell_complete=completion.agents, help="Only this agent may claim it (default: anyone).")
@click.option("--body-file", metavar="FILE", shell_complete=completion.files, help="The task's description, from a file, or - for standard input.")
@click.option("--depends", multiple=True, metavar="ID", shell_complete=completion.tasks, help="A task that must be done first (one that failed, was cancelled or removed is refused); repeat for more.")
@click.option("--priority", type=int, default=0, show_default=True, help="Higher is claimed first.")
def task_add(title: str, agent: str | None, body_file: str | None, depends: tuple[str, ...], priority: int) -> int:
    """Write a new task spec, tasks/task-NNN-<slug>.md, and print its id.

    A dependency must exist (exit status 2 if no task has that id) and be one a task can wait
    out: one that failed, was cancelled or removed is refused (exit status 1), as is one removed
    while the spec was written (the spec is deleted again)."""
    from ..bus import parse_id

    fleet = load()
    if agent:
        fleet.config.agent(agent)
    t = fleet.bus().add(title, agent=agent, body=_body(body_file), depends=[parse_id(d) for d in depends],
                        priority=priority)
    click.echo(t.name)
    return 0


@task.command("list", cls=FleetCommand)
@click.option("--status", type=click.Choice(["open", "claimed", "done", "failed", "cancelled", "invalid"]),
              help="Only tasks in this state.")
@click.option("--agent", metavar="NAME", shell_complete=completion.agents, help="Only tasks assigned to or claimed by this agent.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def task_list(status: str | None, agent: str | None, as_json: bool) -> int:
    """List the tasks: id, state, agent and title. A spec that cannot be read is listed as invalid,
    with its path and line, and the rest of the bus keeps working."""
    tasks = load().bus().all()
    tasks = [t for t in tasks if (not status or t.status == status) and (not agent or agent in (t.agent, t.claimed_by))]
    if as_json:
        print_json([t.as_dict() for t in tasks])
        return 0
    _table([_task_line(t) for t in tasks])
    for t in tasks:
        if t.error:
            warn(t.error)
    return 0


@task.command("show", cls=FleetCommand)
@click.argument("id", shell_complete=completion.tasks)
@click.option("--json", "as_json", is_flag=True, help="Print the task as JSON.")
def task_show(id: str, as_json: bool) -> int:
    """Show one task: its spec, its state and its result, and any result kept aside (a holder's
    result that came after the task was cancelled or taken over)."""
    from ..bus import parse_id

    bus = load().bus()
    t = bus.get(parse_id(id))
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
@click.option("--agent", metavar="NAME", shell_complete=completion.agents, help="Who claims (default: $FLEET_AGENT, or this worktree's agent).")
@click.option("--lease", metavar="DURATION", help="How long the claim holds without renewal (default: bus.lease).")
@click.option("--wait", is_flag=True, help="Block until a task can be claimed (woken by file changes, not by polling).")
@click.option("--json", "as_json", is_flag=True, help="Print the claimed task as JSON.")
def task_claim(agent: str | None, lease: str | None, wait: bool, as_json: bool) -> int:
    """Claim the next task: open, assigned to this agent or to nobody, its dependencies done; by
    priority, then id. Prints its id first. Exit status 1 when nothing can be claimed."""
    import time

    from ..config import parse_duration
    from ..errors import FleetError

    fleet = load()
    who = fleet.worker(agent)
    bus = fleet.bus()
    seconds = parse_duration(lease) if lease else None
    t = bus.claim(who, seconds)
    if t is None and not wait:
        raise FleetError(f"no task can be claimed by '{who}' now",
                         "git fleet-task list shows what is open; --wait blocks until one can be claimed")
    if t is None:
        with bus.watcher() as watch:  # watching from before the next scan: no change slips between
            while (t := bus.claim(who, seconds)) is None:
                pending = [x.expires for x in bus.all() if x.status == "claimed" and x.expires]
                watch.wait(min([5.0] + [max(0.05, e - time.time()) for e in pending]))
    if as_json:
        print_json(t.as_dict())
    else:
        click.echo(f"{t.name}\t{t.title}\t{t.path}")
    return 0


holder_option = click.option("--agent", metavar="NAME", shell_complete=completion.agents,
                             help="Who holds it (default: $FLEET_AGENT, or this worktree's agent).")


def _who_and_id(agent: str | None, id: str) -> tuple[Any, str, int]:
    from ..bus import parse_id

    fleet = load()
    return fleet.bus(), fleet.worker(agent), parse_id(id)


def _spec_broken(t: Any, what: str) -> None:
    """Its holder went on with a task whose spec was broken by hand after the claim: say where."""
    if t.error:
        warn(t.error)
        hint(f"{what}; the spec of {t.name} was changed by hand after it was claimed and cannot be read: "
             "the orchestrator fixes that line (git fleet-doctor lists it too)")


@task.command("renew", cls=FleetCommand)
@click.argument("id", shell_complete=completion.claimed_tasks)
@holder_option
@click.option("--lease", metavar="DURATION", help="The new lease, from now (default: bus.lease).")
def task_renew(id: str, agent: str | None, lease: str | None) -> int:
    """Extend the lease of a task this agent holds."""
    from ..config import parse_duration

    bus, who, tid = _who_and_id(agent, id)
    _spec_broken(bus.renew(tid, who, parse_duration(lease) if lease else None), "the lease is renewed all the same")
    return 0


@task.command("release", cls=FleetCommand)
@click.argument("id", shell_complete=completion.claimed_tasks)
@holder_option
def task_release(id: str, agent: str | None) -> int:
    """Give a claimed task back, for anyone to claim again."""
    bus, who, tid = _who_and_id(agent, id)
    _spec_broken(bus.release(tid, who), "it is released all the same; no worker claims it until the spec is fixed")
    return 0


@task.command("done", cls=FleetCommand)
@click.argument("id", shell_complete=completion.claimed_tasks)
@holder_option
@click.option("--result-file", metavar="FILE", shell_complete=completion.files, help="The result, from a file, or - for standard input.")
def task_done(id: str, agent: str | None, result_file: str | None) -> int:
    """Finish a task this agent holds: write results/task-NNN-result.md (atomically) and mark it done.

    A result that cannot be recorded (the task was cancelled, or the lease lapsed and another
    worker took it over) is refused, exit status 1, and kept at
    results/task-NNN-unrecorded-AGENT-K.md, never dropped. A spec broken by hand after the claim
    does not stop the holder: the result is recorded, with a warning naming the file and line.
    """
    bus, who, tid = _who_and_id(agent, id)
    t = bus.finish(tid, who, _body(result_file) or "Done.")
    click.echo(str(t.result))
    _spec_broken(t, "the result is recorded all the same")
    return 0


@task.command("fail", cls=FleetCommand)
@click.argument("id", shell_complete=completion.claimed_tasks)
@click.option("--reason", required=True, help="Why it failed; recorded as the result.")
@holder_option
def task_fail(id: str, reason: str, agent: str | None) -> int:
    """Give up on a task this agent holds: record it as failed, with the reason (kept aside, as
    with done, if it cannot be recorded)."""
    bus, who, tid = _who_and_id(agent, id)
    t = bus.finish(tid, who, reason, failed=True)
    click.echo(str(t.result))
    _spec_broken(t, "the failure is recorded all the same")
    return 0


def _orchestrators(what: str) -> Any:
    """The bus, for a command only the orchestrator runs: an agent gives its own task back or
    ends it, but does not end or delete the orchestrator's tasks."""
    from ..errors import FleetError

    fleet = load()
    try:
        fleet.refuse_agents(what)
    except FleetError as e:
        raise FleetError(e.message, f"run it in the main worktree ({fleet.main}), outside any agent's session; an "
                         "agent gives a task it holds back with git fleet-task release ID, or ends it with git "
                         "fleet-task fail ID --reason TEXT") from None
    return fleet.bus()


@task.command("cancel", cls=FleetCommand)
@click.argument("id", shell_complete=completion.unended_tasks)
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
    from ..bus import parse_id

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
@click.argument("id", shell_complete=completion.removable_tasks)
def task_rm(id: str) -> int:
    """Delete a task added by mistake: its spec goes. Only a task that nobody has ever claimed and
    that no unfinished task depends on; any other is cancelled instead (git fleet-task cancel),
    so its record stays. Its id is not given out again. The orchestrator's only.

    It ends as any task does, once: results/task-NNN-result.md, status: removed, is linked into
    place before the spec goes, so a cancel racing it either lands first (then rm is refused)
    or is refused itself. An rm killed halfway leaves nothing stuck: the task is as it was, or
    removed (the next rm, or any listing, deletes the spec left behind)."""
    from ..bus import parse_id

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


ALL["plan"] = plan
ALL["task"] = task
fleet.add_command(plan, "plan")
fleet.add_command(task, "task")


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


remote_option = click.option("--remote", metavar="REMOTE", help="A remote name, URL or path (default: the base branch's remote, else origin).")


def _teleporting(agent: str) -> Fleet:
    fleet = load()
    fleet.refuse_agents("teleport another agent", but=agent)
    return fleet


@teleport.command("push", cls=FleetCommand)
@click.argument("agent", shell_complete=completion.agents)
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
    from ..teleport import send

    out = send(_teleporting(agent), agent, remote, force=force)
    if as_json:
        print_json(_teleported(out))
        return 0
    click.echo(f"sent '{agent}' to {out.remote}: {out.branch} at {out.head[:12]}, {_carried(out.counts)}, "
               f"{len(out.tasks)} claimed task(s)")
    hint(f"on the other machine: git fleet-teleport pull {agent}" + (f" --remote {remote}" if remote else ""))
    hint(f"this worktree is unchanged; stop the agent here so only one copy works on it (git fleet-down {agent})")
    return 0


@teleport.command("pull", cls=FleetCommand)
@click.argument("agent", shell_complete=completion.agents)
@remote_option
@click.option("--force", is_flag=True,
              help="Take the snapshot even where this side moved on; what was here is kept at refs/fleet/backups/AGENT/N.")
@click.option("--path", "path", metavar="DIR", shell_complete=completion.directories,
              help="Where to make the agent's worktree if this repository has none for it "
                   "(default: the configured place, if nothing is there).")
@click.option("--json", "as_json", is_flag=True, help="Print what was restored as JSON.")
def teleport_pull(agent: str, remote: str | None, force: bool, path: str | None, as_json: bool) -> int:
    """Recreate the agent here from its snapshot on the remote: worktree, branch, index, files, tasks.

    Only a worktree this repository has registered for the agent is restored into. Without one,
    one is made at --path DIR, or where the configuration puts it if nothing is there yet; a
    directory that is not this repository's worktree is never touched.
    """
    from ..teleport import receive

    out = receive(_teleporting(agent), agent, remote, force=force, path=path)
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
    from ..teleport import parked

    rows = parked(load(), remote)
    if as_json:
        print_json(rows)
        return 0
    _table([[r["agent"], r.get("branch") or "?", r.get("host") or "?",
             _age(r["time"]) if r.get("time") else "?",
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


ALL["teleport"] = teleport
fleet.add_command(teleport, "teleport")


@command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.option("--fix", is_flag=True, help="Repair what is safe to repair: reinstall the hooks, prune stale worktree records "
              "other than agents' (an agent's may be of a worktree moved by hand).")
def doctor(as_json: bool, fix: bool) -> int:
    """Walk the checklist for starting a parallel session; say what is wrong and how to fix it.

    Checks that the config reads and names agents; that every agent's worktree exists and is on
    its branch, and no stale worktree records are left; that zones do not overlap (tracked files
    owned by no agent are listed as information: they are the orchestrator's); that the hooks
    are installed (and chained) where git runs them; that session names are distinct and the
    agents' commands and tmux can be found; that the bus can be written and has no lapsed
    claims or unreadable specs; that checkpoints are declared and name existing agents; and that
    no fleet branch is left without an agent. Each check is ok, a warning (worth knowing; the
    fleet works: no agents or checkpoints yet, an agent program or tmux missing) or a failure.
    Exits 1 only when a check fails.
    """
    from ..doctor import diagnose

    items = diagnose(load("repair the fleet" if fix else None), fix=fix)
    if as_json:
        print_json([i.as_dict() for i in items])
    else:
        _print_checks(items)
    return 0 if all(i.ok for i in items) else 1


@command()
@click.option("--yes", is_flag=True, help="Do not ask first.")
@click.option("-n", "--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print what was (or would be) removed and kept as JSON.")
def prune(yes: bool, dry_run: bool, as_json: bool) -> int:
    """Remove the agents whose work is fully merged, with their worktrees and branches.

    An agent goes when its branch has work of its own and all of it is in the base, by merge or
    by a squash (merging it again would change nothing), and its worktree (wherever git has the
    branch checked out) holds no uncommitted or untracked work and is not in the middle of a
    rebase. A branch with unmerged commits and a worktree with work in it are never removed, and
    neither is an agent that has done nothing yet. Stale worktree records (their directories are
    gone) are pruned too. Asks first unless --yes; without a terminal to ask on, it refuses.

    Ignored files (build output, .env, node_modules) go with a worktree, as with git worktree
    remove; they never keep an agent, but each agent's are counted and named in the dry run, the
    question, the result lines and --json ("ignored"). git-fleet's own .fleet/ is not counted.
    """
    import sys

    from ..doctor import prunable
    from ..doctor import prune as do_prune
    from ..errors import FleetError

    fleet = load(None if dry_run else "prune agents")
    found, kept, stale = prunable(fleet)
    removed: list[str] = []
    losing = [f"{c.agent}: {c.losing}" for c in found if c.losing]
    if found and not dry_run:
        names = ", ".join(c.agent for c in found)
        if not yes:
            if not sys.stdin.isatty():
                raise FleetError("\n".join([f"would remove {names}", *losing]),
                                 "pass --yes to remove them, or -n to see why")
            for line in losing:
                note(line)
            also = ", and the ignored files above" if losing else ""
            if not click.confirm(f"remove {names} (worktrees and branches{also})?", default=False):
                return 1
        removed = do_prune(fleet, found)
    elif stale and not dry_run:
        fleet.repo.worktree_prune()
    if as_json:
        print_json({"removed": removed, "would_remove": [c.__dict__ for c in found] if dry_run else [],
                    "ignored": {c.agent: c.ignored for c in found},
                    "kept": [{"agent": a, "why": w} for a, w in kept], "stale_worktrees": stale})
        return 0
    for c in found:
        note(f"{'would remove' if dry_run else 'removed'} {c.agent}: {c.branch} {c.why}" + (f"; {c.losing}" if c.losing else ""))
    for s in stale:
        note(f"{'would prune' if dry_run else 'pruned'} stale worktree record {s}")
    for a, why in kept:
        note(f"kept {a}: {why}")
    return 0


def _print_checks(items: list[Any]) -> None:
    from . import paint

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


ALL["doctor"] = doctor
ALL["prune"] = prune
fleet.add_command(doctor, "doctor")
fleet.add_command(prune, "prune")
