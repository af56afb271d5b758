"""The agents' sessions in tmux: git fleet-up, -ps, -down, -resume and -attach."""

from __future__ import annotations

import sys

import click

from .. import agent_clis, whereabouts
from ..errors import FleetError
from ..sessions import Sessions
from . import command, completers, hint, note, print_json, warn
from .output import age, load, machine, stale_hint, state_of, table


def _finite(_ctx: click.Context, _param: click.Parameter, seconds: float | None) -> float | None:
    """A stagger is a number of seconds: not nan (which every range lets through)."""
    if seconds is not None and seconds != seconds:
        raise click.BadParameter("nan is not a number of seconds", param_hint="'--stagger'")
    return seconds


def _sessions(changes: str | None = None) -> Sessions:
    return Sessions(load(changes))


@command()
@click.argument("agents", nargs=-1, shell_complete=completers.agents)
@click.option("--stagger", type=click.FloatRange(min=0, max=3600), callback=_finite,
              metavar="SECONDS",
              help="Seconds between agents' starts (default: fleet.stagger).")
@click.option("--layout", type=click.Choice(["windows", "tiled"]),
              help="A tmux window per agent, or panes tiled in one window named fleet (default: fleet.layout).")
@click.option("--detach", is_flag=True, help="Neither attach to the tmux session nor switch to it.")
@click.option("--force", is_flag=True, help="Start more than max_agents agents.")
@click.option("--trust", is_flag=True,
              help="Tell the agents' CLIs their worktrees and the fleet's hooks are trusted (as their dialogs would).")
@click.option("--sandbox/--no-sandbox", "sandboxed", default=None,
              help="Run the agents sandboxed, or not, whatever their and the fleet's `sandbox` keys say.")
@click.option("--watch", type=click.Choice(["window", "pane", "none"]), default="window", show_default=True,
              help="Where a new session runs git fleet-watch: at the orchestrator window's shell, in a pane "
                   "above it, or nowhere.")
def up(agents: tuple[str, ...], stagger: float | None, layout: str | None, detach: bool, force: bool,
       trust: bool, sandboxed: bool | None, watch: str) -> int:
    """Start the fleet in tmux: one window (or pane) per agent, plus the orchestrator's.

    Creates (or reuses) one tmux session for the repository, with an orchestrator window in the
    main worktree and one window per agent (all, or the named ones), named after it, or with
    --layout tiled one pane per agent in a window named fleet, titled with the agent's name;
    each is started in its worktree, running its command (its resume command, if it has run before: after a
    reboot or a killed tmux server this brings the fleet back where it was) with the fleet
    environment (see git fleet-run). Starts are staggered against API rate limits. Agents
    already running are left alone. A command that exits at once is reported, naming the
    agent; the others are not affected.

    A session it makes shows git fleet-watch in the orchestrator window (--watch window, the
    default: the whole height for the agents' rows at 80x24, and q gives the shell back there);
    --watch pane puts it above the shell instead, --watch none leaves the shell alone.

    Outside tmux it attaches, inside tmux it switches; --detach, or no terminal, does neither.
    tmux's own TMUX_TMPDIR chooses the server, so fleets can be kept apart.

    An agent CLI runs no hook (so no zone check at the edit) where its person has not trusted
    the workspace: Claude Code asks once per repository (every worktree shares the main
    worktree's answer), Gemini CLI per folder, Codex per project and per hook. Where an answer
    is missing, up says so; --trust gives them, in each CLI's own file, as its dialog would
    (~/.claude.json, ~/.gemini/trustedFolders.json, ~/.codex/config.toml; undone there).

    Sandboxed (--sandbox, or `sandbox = true` for the agent or the fleet), an agent and all it
    starts may write only its worktree, its branch, its own objects and bus entries, its CLI's
    state and a temporary directory, and reach no local server; see git-fleet-sandbox(7).
    Where the system or the agent's layout cannot hold the sandbox, that agent is refused.
    """
    s = _sessions("start agents")
    chosen, crowded = s.choose(agents, force)
    if crowded:
        warn(crowded)
    if trust:
        for line in agent_clis.trust(s.fleet, chosen):
            (warn if line.startswith("warning: ") else note)(line.removeprefix("warning: "))
    else:
        untrusted = agent_clis.untrusted(s.fleet, chosen)
        for line in untrusted:
            warn(line)
        if untrusted:
            hint("answer for every agent at once: git fleet-up --trust (man git-fleet-agents)")
    # on a terminal, each start and each wait as it happens (a stagger of 20 s is long to sit through)
    result = s.up(chosen, s.fleet.config.stagger if stagger is None else stagger, layout,
                  tell=note if sys.stderr.isatty() else None, sandboxed=sandboxed, watch=watch)
    for name in result.running:
        note(f"{name}: already running")
    failure = result.failure()
    if failure is not None:
        raise failure
    if not detach and sys.stdin.isatty() and sys.stdout.isatty():
        s.show()
    return 0


@command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def ps(as_json: bool) -> int:
    """What each agent is doing, since when, and how many edits its hooks refused.

    \b
    States, as the agent CLI's hooks report them:
      working    a prompt or a tool running (which tool)
      needs you  a permission prompt or a question, with its message
      idle       its turn ended: it waits for a prompt
      exited     its session ended, or its window closed
    An agent whose CLI has no hooks (or runs without them) shows running or stopped, from tmux.
    The sandbox column says whether a running agent was started sandboxed.
    --json adds its tmux pane, the CLI's session id, the session name and the last message.
    """
    sessions = _sessions()
    rows = sessions.ps()
    where = whereabouts.look(sessions.fleet)  # (a fleet across machines: the others' agents too)
    whereabouts.onto(rows, where)
    if as_json:
        print_json(rows)
        return 0
    table([["agent", "state", "since", "refused", "sandbox", "session id", "model", *(["machine"] if where else [])]] +
          [[r["agent"], state_of(r, 40), age(r["state_since"]) if r["state_since"] else "-",
            str(r["refused"]) if r["reported"] else "-", {True: "yes", False: "no"}.get(r["sandboxed"], "-"),
            r["session_id"] or "-", r["model"], *([machine(r)] if where else [])] for r in rows])
    if where is not None and where.stale:
        warn(where.stale)
        hint(stale_hint(where.fetched))
    return 0



@command()
@click.argument("agents", nargs=-1, shell_complete=completers.agents)
@click.option("--yes", is_flag=True, help="Do not ask before stopping agents that still run.")
def down(agents: tuple[str, ...], yes: bool) -> int:
    """Stop agents (all, or the named ones): Ctrl-C first, then their windows are closed.

    Asks first where an agent still runs, unless --yes; without a terminal to ask on, it refuses.
    """
    s = _sessions("stop agents")
    names = s.named(agents)
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
@click.argument("agent", shell_complete=completers.agents)
def resume(agent: str) -> int:
    """Start an agent's resume command in its window (made if missing)."""
    s = _sessions("resume agents")
    if not s.resume(s.fleet.config.agent(agent)):
        warn(f"{agent}: no session id was recorded to resume, so it started afresh "
             "(its agent CLI's hooks record one: git fleet-doctor)")
    return 0


@command()
@click.argument("agent", required=False, shell_complete=completers.agents)
def attach(agent: str | None) -> int:
    """Attach to the fleet's tmux session (switch to it inside tmux), at AGENT's pane if given."""
    _sessions().attach(agent)
    return 0
