"""The agents and their zones: git fleet-init (and its walk through the launch checklist), -add,
-rm, -list, -who, -zones, -set and -run."""

from __future__ import annotations

import sys

import click

from .. import __version__, brief, machines, ownership
from .. import agents as fleet_agents
from .. import init as setup
from ..check import quote
from ..doctor import diagnose
from ..errors import UsageError
from . import CONTEXT, FleetCommand, command, completers, hint, note, print_json, warn
from .output import load, print_checks, show_report, table

ZONE_HELP = "A gitignore pattern the agent owns, relative to the repository root; repeat for more (the last match decides)."


@command()
@click.option("--base", metavar="BRANCH", help="The branch agents start from (default: the current branch).")
@click.option("--server", is_flag=True, help="Install the pre-receive check (for a bare repository that agents push to).")
@click.option("--uninstall", is_flag=True, help="Remove the fleet's hooks and put back the hooks they chained.")
@click.option("--orchestrator-key", "orchestrator_keys", multiple=True, metavar="FILE", shell_complete=completers.files,
              help="With --server: the SSH public key whose signed pushes (git push --signed) are the orchestrator's.")
@click.option("--agent-key", "agent_keys", multiple=True, metavar="AGENT=FILE",
              help="With --server: the SSH public key an agent's pushes to its branch must be signed with.")
@click.option("--base-push", type=click.Choice(["merges", "signed", "any"]),
              help="With --server: what moves the base (default: signed with an orchestrator key, else merges).")
@click.option("--signed-machines", is_flag=True,
              help="With --server: take the fleet's shared refs only in pushes signed by the machine they speak for.")
@click.option("--machine-key", "machine_keys", multiple=True, metavar="FILE", shell_complete=completers.files,
              help="With --server: enrol a machine's public key (implies --signed-machines; then only enrolled ones join).")
@click.option("--remote", metavar="NAME", shell_complete=completers.remotes,
              help="Make the fleet span machines through this git remote: the bus, claims and results are kept there.")
@click.option("--new-key", is_flag=True,
              help="With --remote: replace this machine's key, the new one registered in a push signed with the old.")
@click.option("-i", "--interactive", is_flag=True,
              help="Walk through the launch checklist: agents and zones proposed from the top-level directories, a checkpoint, "
                   "then git fleet-doctor.")
@click.option("-v", "--verbose", is_flag=True, help="Say what was done.")
@click.version_option(__version__, "--version", message="git-fleet %(version)s")
def init(base: str | None, server: bool, uninstall: bool, orchestrator_keys: tuple[str, ...], agent_keys: tuple[str, ...],
         base_push: str | None, signed_machines: bool, machine_keys: tuple[str, ...], remote: str | None,
         interactive: bool, verbose: bool, new_key: bool) -> int:
    """Set up a repository for a fleet of agents.

    Writes a commented .gitfleet.toml in the main worktree if there is none (base branch,
    branch prefix, worktree location, agent limits) and installs the pre-commit, pre-merge-commit, pre-push
    and pre-receive hooks in the repository's common hooks directory, so that every linked
    worktree runs them. A hook that was there before is kept as HOOK.pre-fleet and runs
    first. Running it again refreshes the hooks and keeps the configuration.

    Where core.hooksPath points inside the checkout (husky) or outside this repository's
    own config, nothing is written there: the exact line to add is printed instead.

    In a bare repository (or with --server) it installs the pre-receive hook, which reads the zones
    from the base branch's committed .gitfleet.toml; --base names it when HEAD does not. The server
    also keeps the base and every agent's branch from being deleted or force-pushed, refuses trees git
    cannot check out (receive.fsckObjects), and moves the base only by merges of agent branches, each
    held to its agent's zone. A server cannot tell pushers apart by itself: with --orchestrator-key,
    pushes signed with that key (git push --signed, gpg.format = ssh) are the orchestrator's, which
    alone then move the base; with --agent-key NAME=FILE, pushes to that agent's branch must be signed
    by it. --base-push chooses what moves the base: merges, signed, or any push. --signed-machines
    takes the shared refs (refs/fleet/) only signed by the machine each speaks for; --machine-key enrols.

    In the main worktree it also sets branch.<base>.mergeOptions = --no-ff, so that a plain `git merge`
    of an agent's branch makes a merge commit the pre-merge-commit hook checks (a fast-forward runs no
    hook). `git merge --squash` then needs --ff.

    --interactive then walks through the rest of the launch checklist: it proposes one agent per top-
    level directory (or per part of the one directory that holds nearly everything), which you accept
    or edit, adds them, offers a checkpoint that merges them all, and ends with git fleet-doctor's
    report.

    --remote NAME makes the fleet span machines: the bus (tasks, claims, results) is kept on that
    remote under refs/fleet/, a claim a compare-and-swap there. This clone gets a machine id (git
    config fleet.machine) and key (--new-key replaces it); a waiting claim fetches at most every
    fleet.poll seconds (default 2).
    """
    if misuse := _misused(interactive, remote, new_key, server or uninstall):
        raise UsageError(misuse)
    result = setup.init(base=base, server=server, uninstall=uninstall, orchestrator_keys=orchestrator_keys,
                        agent_keys=_agent_keys(agent_keys), base_push=base_push,
                        signed_machines=(signed_machines, machine_keys))
    _say_init(result, uninstall, verbose, spanning=bool(remote))
    if remote:
        span(remote, new_key)
    if not interactive:
        return 0
    try:
        return _walk_through()
    except click.Abort:
        if sys.stdin.isatty():
            raise  # (Ctrl-C on a terminal: interrupted)
        # its standard input ran out before the questions did: no terminal, no answers
        undone = result.created and setup.forget_unless_agents(load())
        raise UsageError("--interactive ran out of answers on its standard input (there is no terminal to ask on); "
                         + ("nothing was set up" if undone else f"{result.config_path} is kept, with what was answered"),
                         "run it in a terminal, or give every answer on standard input, or set up without it: "
                         "git fleet-init, then git fleet-add NAME --zone ...") from None


def _misused(interactive: bool, remote: str | None, new_key: bool, server: bool) -> str | None:
    if (interactive or remote) and server:
        return (f"--{'interactive sets up agents' if interactive else 'remote is for a clone agents work in'}; "
                "it does not go with --server or --uninstall")
    return "--new-key goes with --remote NAME (the machine's key on that remote)" if new_key and not remote else None


def span(remote: str, new_key: bool = False) -> None:
    """The fleet made to span machines through `remote` (init --remote, join), said; with
    `new_key`, this machine's key replaced there."""
    fleet = load()
    me = setup.span(fleet, remote)
    click.echo(f"the fleet spans machines through remote '{remote}'; this clone is machine {me.describe()}")
    if new_key:
        machines.new_key(fleet, remote)
        click.echo(f"machine {me.id} has a new key, registered on '{remote}'; the old one signs nothing more")


def _agent_keys(specs: tuple[str, ...]) -> list[tuple[str, str]]:
    """--agent-key AGENT=FILE, as (agent, file) pairs."""
    pairs = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--agent-key {spec}: give AGENT=FILE", "e.g. --agent-key backend=~/.ssh/backend.pub")
        pairs.append((name, path))
    return pairs


def _say_init(result: setup.InitResult, uninstall: bool, verbose: bool, spanning: bool = False) -> None:
    """What init did: its warnings, what to do by hand, what to commit; with -v, the hooks."""
    show_report(result.report, verbose or result.config_path is None)  # (a server's: say what it holds)
    h = result.hooks
    for line in h.manual:
        hint(line)
    if h.manual:
        warn(f"core.hooksPath is {h.directory}; the fleet did not write there")
    if result.created and result.config_path is not None:
        # what to commit: other clones and a server read the committed copies
        bus = ("" if spanning else "; commit the bus too once it has tasks (tasks/, results/, master_plan.md; claims "
               "stay out, in tasks/.state)")
        note(f"wrote {result.config_path}: commit it (git add {result.config_path.name} && git commit), as other "
             f"clones and a server read the committed copy{bus}")
    if verbose:
        verb = "removed" if uninstall else "installed"
        if h.installed:
            note(f"{verb} hooks in {h.directory}: {', '.join(h.installed)}")
        for name in h.chained:
            note(f"{'restored' if uninstall else 'chained'} your existing {name} hook ({name}.pre-fleet)")


def _walk_through() -> int:
    """The interactive part of init: agents and zones, a checkpoint, then the doctor's report."""
    fleet = load()
    click.echo(f"{fleet.config_path}: base branch {fleet.config.base}")
    proposals = setup.propose_zones(fleet)
    if proposals:
        click.echo("Directories: " + ", ".join(f"{z} ({n} file{'s' if n != 1 else ''})" for _, z, n in proposals))
    default = " ".join(f"{name}={zone}" for name, zone, _ in proposals)
    answer = click.prompt("Agents, as NAME=PATTERN[,PATTERN...] separated by spaces (- for none)",
                          default=default or "-", show_default=True)
    added = []
    for done in setup.add_answered(fleet, answer):  # each said as it is done
        if done.refused is not None:
            warn(f"skipped '{done.name}': {done.refused}")
            continue
        added.append(done.name)
        click.echo(f"added {done.name}: {done.patterns} (worktree {done.worktree})")
    if added and not fleet.config.checkpoints:
        cp = click.prompt("A checkpoint that merges them all, in this order (- for none)", default="phase-1")
        name = setup.checkpoint_answered(fleet, cp, added)
        if name is not None:
            click.echo(f"declared checkpoint {name}: {' '.join(added)}  (git fleet-merge --checkpoint {name})")
    click.echo("\nThe checklist (git fleet-doctor):")
    print_checks(diagnose(fleet))
    click.echo("\nNext: git fleet-up starts the agents in tmux; git fleet-task add gives them work.")
    return 0


@command()
@click.argument("name")
@click.option("--zone", "zones", multiple=True, required=True, metavar="PATTERN", help=ZONE_HELP)
@click.option("--branch", metavar="BRANCH",
              help="The agent's branch (default: <branch_prefix>NAME); an existing branch is adopted as it is.")
@click.option("--path", "path", metavar="DIR", shell_complete=completers.directories,
              help="Where the worktree goes, in this clone (default: fleet.worktree, ../REPO-NAME).")
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
    show_report(report, verbose or sys.stderr.isatty())  # what it made, on a terminal as git's porcelain does
    return 0


@command()
@click.argument("name", shell_complete=completers.agents)
@click.option("--force", is_flag=True, help="Remove even with uncommitted work or unmerged commits (the branch is kept).")
@click.option("--keep-branch", is_flag=True, help="Keep the agent's branch even when it is fully merged.")
@click.option("-v", "--verbose", is_flag=True, help="Say what was done.")
def rm(name: str, force: bool, keep_branch: bool, verbose: bool) -> int:
    """Remove an agent: its worktree and its registration.

    Refuses while the worktree has uncommitted or untracked work, or while the branch has
    commits the base does not have, unless --force. A fully merged branch is deleted; a
    branch with unmerged commits is always kept, so --force never loses commits.
    """
    show_report(fleet_agents.remove(load(), name, force=force, keep_branch=keep_branch), verbose)
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
    table([[r["agent"], r["branch"], r["worktree"], "  ".join(r["zone"]) + ("" if r["state"] == "ok" else f"  [{r['state']}]")]
            for r in rows])
    return 0


@command()
@click.argument("paths", nargs=-1, required=True, shell_complete=completers.files)
@click.option("--json", "as_json", is_flag=True, help="Print an object mapping each path to the list of its owners.")
def who(paths: tuple[str, ...], as_json: bool) -> int:
    """Print the agent(s) that own each PATH, and the pattern that decides.

    Paths are relative to the current directory and need not exist. A path no agent owns
    belongs to the orchestrator. For a directory (one in the work tree, or in the base), it
    says who owns the files inside it, with how many each: the directory itself is no one's.
    """
    result = ownership.who(load(), paths)
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
    table([[n, "  ".join(a.zone)] for n, a in agents.items()])
    if overlaps:
        click.echo("overlaps:")
        for a, b, ex in overlaps:
            click.echo(f"  {a} and {b}: both own {ex}")
    return 0


@command(name="set")
@click.argument("name", shell_complete=completers.agents)
@click.argument("setting", nargs=-1, metavar="[sandbox on|off]")
@click.option("--zone", "zones", multiple=True, metavar="PATTERN", help="Replace the agent's zone; repeat for more patterns.")
@click.option("--allow-overlap", is_flag=True, help="Accept a zone that shares paths with another agent's.")
@click.option("--session", metavar="NAME", help="The agent's session name.")
@click.option("--model", metavar="MODEL", help="The model its command runs.")
@click.option("--command", "command_", metavar="TEMPLATE", help="How its session starts.")
@click.option("--resume", metavar="TEMPLATE", help="How its session resumes.")
@click.option("--sandbox", type=click.Choice(["on", "off"]),
              help="Run it sandboxed from now on (its `sandbox` key), or not.")
def set_(name: str, setting: tuple[str, ...], zones: tuple[str, ...], allow_overlap: bool, session: str | None,
         model: str | None, command_: str | None, resume: str | None, sandbox: str | None) -> int:
    """Change an agent's zone, session settings or sandbox, with the same checks as git fleet-add.

    `sandbox on` (or --sandbox on) runs it sandboxed from then on; it needs the agent's branch in
    a ref directory of its own: the default branch <branch_prefix>NAME is moved to
    <branch_prefix>NAME/work (its reflog and worktree follow). `sandbox off` ends that.

    Command templates are run by sh, with these placeholders filled in, shell-quoted: {agent},
    {session}, {session_id} (the agent CLI's own session id: a new one to start with, the one its
    hooks reported to resume), {model}, {worktree}, {branch}, {zone}, {task} (its claimed task),
    {port}. The default is Claude Code: claude --session-id {session_id} --name {session}
    --model {model}, resumed with claude --resume {session_id}. Presets for other agent CLIs
    (checked against their --help: Gemini CLI 0.61, Codex 0.171, Aider 0.86):

    \b
      Gemini:  --command 'gemini --session-id {session_id} --model {model}'
               --resume 'gemini --resume {session_id} --model {model}'
      Codex:   --command 'codex --model {model}'  --resume 'codex resume {session_id}'
      Aider:   --command 'aider --model {model} --git-commit-verify'
               --resume 'aider --model {model} --git-commit-verify --restore-chat-history'
      Script:  --command './agent.sh {task}'
    """
    if setting:  # `git fleet-set NAME sandbox on`, as --sandbox on
        if len(setting) != 2 or setting[0] != "sandbox" or setting[1] not in ("on", "off") or sandbox is not None:
            raise UsageError(f"cannot set '{' '.join(setting)}'", "say sandbox on or sandbox off (or --sandbox on|off)")
        sandbox = setting[1]
    fleet = load()
    before = fleet.config.agents.get(name)
    updated = fleet_agents.set_agent(fleet, name, zone=zones, allow_overlap=allow_overlap,
                                     session={"session": session, "model": model, "command": command_, "resume": resume},
                                     sandbox=None if sandbox is None else sandbox == "on")
    if before is not None and updated.branch != before.branch:
        click.echo(f"{name}: its branch {before.branch} is now {updated.branch} (a ref directory of its own, "
                   "for the sandbox)")
    return 0


@click.command(cls=FleetCommand, context_settings={**CONTEXT, "ignore_unknown_options": True,
                                                   "allow_interspersed_args": False})
@click.option("--sandbox/--no-sandbox", "sandboxed", default=None,
              help="Run it sandboxed, or not, whatever the agent's and the fleet's `sandbox` key say.")
@click.argument("name", shell_complete=completers.agents)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def run(name: str, argv: tuple[str, ...], sandboxed: bool | None) -> int:
    """Run a command in an agent's worktree with the fleet environment, without tmux.

    The environment: FLEET_AGENT, FLEET_SESSION, FLEET_MODEL, FLEET_ZONE (one pattern a line),
    FLEET_BRANCH, FLEET_WORKTREE, FLEET_BUS, FLEET_TASK (its claimed task) and FLEET_BRIEF, plus
    the agent's own env. The brief, .fleet/brief.md in the worktree (ignored by git), is written
    first. Exit status: the command's.

    Sandboxed (--sandbox, or `sandbox = true` for the agent or the fleet), the command and all it
    starts may write only the agent's worktree, its branch, its own objects and bus entries, its
    CLI's state and a temporary directory; see git-fleet-sandbox(7).
    """
    args = list(argv[1:] if argv[:1] == ("--",) else argv)
    return brief.run(load("run commands in an agent's worktree"), name, args, sandboxed)
