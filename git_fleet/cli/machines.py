"""git fleet-join: an agent of a fleet that spans machines, set up on this machine."""

from __future__ import annotations

import click

from .. import init as setup
from .. import joining, machines
from ..errors import UsageError
from ..teleport.remote import remote_of
from . import command, completers, warn
from .agents import span
from .output import load


@command()
@click.argument("agent", shell_complete=completers.agents)
@click.option("--remote", metavar="NAME", shell_complete=completers.remotes,
              help="The remote the fleet meets at, where this clone does not know it yet (default: the base branch's "
                   "remote, else origin, else the only one).")
@click.option("--take-over", is_flag=True,
              help="Take the agent from the machine that holds it: that machine is refused its next claim, result or push.")
@click.option("--path", metavar="DIR", shell_complete=completers.directories,
              help="Where to make its worktree (default: where the configuration puts it).")
def join(agent: str, remote: str | None, take_over: bool, path: str | None) -> int:
    """Run an agent of a fleet that spans machines on this machine (this clone).

    One machine runs an agent at a time: its hold on the fleet's remote (refs/fleet/agents/AGENT)
    says which. join takes it for this machine, and is refused while another machine holds it,
    naming that machine and since when; --take-over takes it all the same (for a machine that is
    gone), and that machine is then refused its next claim, result or push, told where the agent
    went. To move an agent with its work in flight, use git fleet-teleport push there and pull here.

    Then the agent gets its branch (the remote's, where the remote has it), its worktree, hooks
    and brief. The agent must be in the committed .gitfleet.toml. In a clone whose fleet does not
    span machines yet, join first does what git fleet-init --remote does: hooks, and the remote.
    """
    fleet = load()
    fleet.config.agent(agent)  # (a name the fleet has: misuse otherwise, before anything is done)
    spans = machines.remote_of(fleet.repo)
    if spans is None:
        name = remote or remote_of(fleet.main, None, fleet.config.base)
        setup.init()
        span(name)
    elif remote and remote != spans:
        raise UsageError(f"this clone's fleet meets at remote '{spans}', not '{remote}'", "leave --remote out")
    joined = joining.join(load(), agent, take_over=take_over, path=path)
    click.echo(f"'{agent}' runs on machine {joined.machine.describe()}: worktree {joined.worktree}, branch "
               f"{joined.branch}" + (f" ({joined.source})" if joined.source else ""))
    if joined.took_over and joined.took_over.startswith("taken over"):
        warn(joined.took_over)  # (from a hold it could not read)
    elif joined.took_over:
        warn(f"taken over from machine {joined.took_over}: it is refused its next claim, result or push")
    for w in joined.warnings:
        warn(w)
    return 0
