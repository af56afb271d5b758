"""git fleet-demo: the whole practice in a minute, with stand-in agents."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from .. import demo as demo_mod
from ..errors import UsageError
from . import command, print_json


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
    where = Path(directory).absolute()
    demo_mod.check_dir(where)
    if keep and not in_tmux:
        raise UsageError("--keep keeps the demo's tmux server: it goes with --tmux", "git fleet-demo --tmux --keep")
    if in_tmux:
        demo_mod.require_tmux()
    say = (lambda line: None) if as_json or quiet else click.echo
    run = demo_mod.Demo(where, tmux=in_tmux, keep=keep, say=say)
    with demo_mod.signals_as_interrupt():
        try:
            out = run.go()
        except KeyboardInterrupt:
            running = run.step == "running the agents"
            run.stop(interrupted=True)
            click.echo(f"error: interrupted while {run.step}" + ("; the stand-in agents were stopped" if running else "")
                       + f"; what the demo made is in {where}", err=True)
            click.echo(f"hint: look at it there, or remove it: rm -rf {shlex.quote(str(where))}", err=True)
            return 130
    kept = run.attach_hint()
    if as_json:
        print_json({"dir": out.dir, "repo": out.repo, "seconds": round(out.seconds, 1),
                    "agents": out.agents, "refused": out.refused, "merged": out.merged, "tag": out.tag,
                    "tmux": kept})
        return 0
    run.epilogue()
    if kept:
        click.echo(kept, err=quiet)  # with -q too: a server left running is always said
    return 0
