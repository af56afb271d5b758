"""The git fleet-* commands, one module per domain, gathered: ALL names each `git fleet-NAME`, and
`git fleet` is the group of them all. Each command parses, calls one core function and prints;
the manual pages and shell completion are made from ALL.

    agents.py    init, add, rm, list, who, zones, set, run
    merging.py   merge, checkpoint (and checkpoint add), status, sync
    tasks.py     task (the bus) and plan
    sessions.py  up, ps, down, resume, attach (tmux)
    teleport.py  teleport push, pull, list
    doctor.py    doctor, prune
    demo.py      demo
    machines.py  join
"""

from __future__ import annotations

import click

from .. import __version__
from . import CONTEXT, FleetGroup
from .agents import add, init, list_, rm, run, set_, who, zones
from .demo import demo
from .doctor import doctor, prune
from .machines import join
from .merging import checkpoint, merge, status, sync
from .sessions import attach, down, ps, resume, up
from .tasks import plan, task
from .teleport import teleport
from .watch import watch

# in this order: the man pages and the shell completion list them so
ALL: dict[str, click.Command] = {
    "demo": demo, "init": init, "add": add, "join": join, "rm": rm, "list": list_, "who": who, "zones": zones, "merge": merge,
    "checkpoint": checkpoint, "status": status, "watch": watch, "sync": sync, "set": set_, "run": run, "up": up, "ps": ps,
    "down": down, "resume": resume, "attach": attach, "plan": plan, "task": task, "teleport": teleport,
    "doctor": doctor, "prune": prune,
}


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

