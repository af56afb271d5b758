"""Shared CLI machinery: git-style errors, exit codes, colour only on a terminal."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from .. import crash_log, pause
from ..errors import INTERNAL, MISUSE, FleetError, UsageError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _colour(stream: Any) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def paint(text: str, code: str, stream: Any = None) -> str:
    stream = stream or sys.stdout
    return f"\033[{code}m{text}\033[m" if _colour(stream) else text


def warn(message: str) -> None:
    click.echo(paint("warning:", "33", sys.stderr) + " " + message, err=True)


def note(message: str) -> None:
    click.echo(message, err=True)


def hint(message: str) -> None:
    click.echo(paint("hint:", "33", sys.stderr) + " " + message, err=True)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _fail(err: FleetError) -> int:
    text = err.render()
    if _colour(sys.stderr):
        text = text.replace("error:", paint("error:", "1;31", sys.stderr)).replace("hint:", paint("hint:", "33", sys.stderr))
    click.echo(text, err=True)
    return err.exit_code


def _require_cwd() -> None:
    """A shell left in a directory that was removed (a worktree fleet-rm or prune took) gets a
    plain refusal, not a failure of whatever first asks where it is."""
    try:
        os.getcwd()
    except FileNotFoundError:
        raise UsageError("the current directory does not exist any more (removed under this shell?)",
                         "cd to a directory that exists, e.g. the main worktree") from None


class GitStyle(click.Command):
    """Report errors the way git does: `error:`/`hint:` lines on stderr, exit 1 or 2, no traceback."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        prog = prog_name or "git " + os.path.basename(sys.argv[0]).removeprefix("git-")
        try:
            pause.crash("command")
            _require_cwd()
            rv = super().main(args, prog, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as e:
            code = e.exit_code
        except click.exceptions.NoArgsIsHelpError as e:  # a group given no subcommand
            group = e.ctx.command if e.ctx is not None else None
            names = ", ".join(group.list_commands(e.ctx)) if isinstance(group, click.Group) and e.ctx else ""
            path = e.ctx.command_path if e.ctx is not None else prog
            click.echo(f"error: {path} needs a subcommand" + (f": {names}" if names else ""), err=True)
            click.echo(f"hint: see '{path} -h'", err=True)
            code = MISUSE
        except click.UsageError as e:
            click.echo(f"error: {e.format_message()}", err=True)
            # the help of the (sub)command that was misused: git fleet-task add -h, not git fleet-task -h
            click.echo(f"hint: see '{e.ctx.command_path if e.ctx is not None else prog} -h'", err=True)
            code = MISUSE
        except click.Abort:
            click.echo("error: interrupted", err=True)
            code = 130
        except FleetError as e:
            code = _fail(e)
        except BrokenPipeError:
            code = 0
        except Exception as e:  # noqa: BLE001 (a bug: one plain line, never a traceback on the screen; it goes to a log
            for line in crash_log.report(prog, e):
                click.echo(line, err=True)
            code = INTERNAL
        else:
            code = rv if isinstance(rv, int) else 0
        if not standalone_mode:
            return code
        sys.exit(code)


class FleetCommand(GitStyle):
    pass


class FleetGroup(GitStyle, click.Group):
    pass


def command(**kw: Any) -> Callable[[Callable[..., Any]], FleetCommand]:
    return click.command(cls=FleetCommand, context_settings=CONTEXT, **kw)
