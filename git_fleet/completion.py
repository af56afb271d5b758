"""Shell completion for bash, zsh and fish: `git fleet-NAME <TAB>` and `git-fleet-NAME <TAB>`.

click's own scripts do not fit git: git's completion calls a function per command (bash
_git_fleet_rm, zsh _git-fleet-rm) or hands `git fleet-rm` on to the completion of git-fleet-rm
(fish), and click's variable cannot be named after git-fleet-rm. So each shell gets a small shim
(completions/) that runs `python -m git_fleet.completion complete COMMAND WORD...`, which answers
through click's completion with the callbacks below. A failure completes nothing, silently.

    python -m git_fleet.completion bash|zsh|fish   print a shim to source
    python -m git_fleet.completion install PREFIX  install the shims where the shells look
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click
from click.shell_completion import CompletionItem, ShellComplete

if TYPE_CHECKING:
    from .config import Config

Callback = Callable[[click.Context, click.Parameter, str], list[CompletionItem]]
SHELLS = ("bash", "zsh", "fish")
MARK = "git-fleet shell completion"  # in every installed file: what install may replace or remove


def _quiet(fn: Callback) -> Callback:
    """Complete nothing, silently, when `fn` fails (no fleet here, a broken config, ...)."""
    @functools.wraps(fn)
    def safe(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        try:
            return fn(ctx, param, incomplete)
        except Exception:
            return []
    return safe


def _fleet() -> tuple[Path, Config]:
    """The main worktree and the fleet's config, read without the side effects of Fleet.here."""
    from . import config
    from .repo import Repo

    main = Repo.discover().main_worktree
    cfg = config.load(main / config.CONFIG_NAME) if main is not None else None
    if main is None or cfg is None:
        raise LookupError("no fleet here")
    return main, cfg


def _given(ctx: click.Context, param: click.Parameter) -> set[str]:
    value = ctx.params.get(param.name or "")
    return set(value) if isinstance(value, (tuple, list)) else set()


@_quiet
def agents(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The fleet's agents (less those given already), with their zones."""
    given = _given(ctx, param)
    return [CompletionItem(a.name, help=" ".join(a.zone)) for a in _fleet()[1].agents.values()
            if a.name.startswith(incomplete) and a.name not in given]


@_quiet
def checkpoints(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The declared checkpoints, with their agents."""
    return [CompletionItem(c.name, help="agents: " + ", ".join(c.agents)) for c in _fleet()[1].checkpoints.values()
            if c.name.startswith(incomplete)]


def _task_ids(incomplete: str, statuses: tuple[str, ...] = ()) -> list[CompletionItem]:
    """The tasks on the bus (in one of `statuses`, if given), by id as typed: task-007 (the
    default), 7 or 007."""
    from .bus import Bus

    main, cfg = _fleet()
    found = []
    for t in Bus(Path(os.path.normpath(main / cfg.bus_dir))).all():
        form = next((f for f in (t.name, str(t.id), f"{t.id:03d}") if f.startswith(incomplete)), None)
        if form is not None and (t.status in statuses or not statuses):
            found.append(CompletionItem(form, help=f"{t.status}: {t.title}"))
    return found


@_quiet
def tasks(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Every task on the bus."""
    return _task_ids(incomplete)


@_quiet
def open_tasks(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The tasks not ended yet: what cancel and rm take."""
    return _task_ids(incomplete, ("open", "claimed"))


@_quiet
def claimed_tasks(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The tasks someone holds: what done, fail, renew and release take."""
    return _task_ids(incomplete, ("claimed",))


def files(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """File names, completed by the shell."""
    return [CompletionItem(incomplete, type="file")]


def directories(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Directory names, completed by the shell."""
    return [CompletionItem(incomplete, type="dir")]


# -- answering the shims ------------------------------------------------------------------------------

def commands() -> dict[str, click.Command]:
    """Each command by its name after `git `: fleet, fleet-add, ..."""
    from .cli.commands import ALL, fleet

    return {"fleet": fleet, **{f"fleet-{name}": cmd for name, cmd in ALL.items()}}


def complete(command: str, words: list[str]) -> list[CompletionItem]:
    """What may stand for the last of `words`, the arguments of `git COMMAND` (fleet-rm, ...)."""
    cli = commands().get(command)
    if cli is None:
        return []
    args, incomplete = words[:-1], words[-1] if words else ""
    return ShellComplete(cli, {}, f"git {command}", "_GIT_FLEET_COMPLETE").get_completions(args, incomplete)


def _line(item: CompletionItem) -> str:
    text = " ".join(str(item.help or "").split())
    return f"{item.type}\t{item.value}\t{text}"


# -- the shims ---------------------------------------------------------------------------------------------

def _template(name: str) -> str:
    from importlib import resources

    text = (resources.files(__package__ or "git_fleet") / "completions" / name).read_text(encoding="utf-8")
    return text.replace("@PYTHON@", shlex.quote(sys.executable))


def _summary(command: str) -> str:
    cli = commands()[command]
    return " ".join(cli.get_short_help_str(80).split())


def installed_files(shell: str) -> dict[str, str]:
    """The files that make up `shell`'s completion, by their path under PREFIX/share."""
    names = list(commands())
    if shell == "bash":  # one script; bash-completion loads it by any command's name
        text = _template("git-fleet.bash").replace("@COMMANDS@", " ".join(names))
        return {f"bash-completion/completions/git-{name}": text for name in names}
    if shell == "zsh":  # a function file per command: _git calls _git-fleet-rm for `git fleet-rm`
        body = _template("git-fleet.zsh")
        return {f"zsh/site-functions/_git-{name}": f"#compdef git-{name}\n#description {_summary(name)}\n{body}"
                for name in names}
    out = {"fish/vendor_functions.d/__git_fleet_complete.fish": _template("git-fleet.fish"),
           "fish/vendor_conf.d/git-fleet.fish": _template("git-fleet-git.fish")}
    for name in names:
        out[f"fish/vendor_completions.d/git-{name}.fish"] = (
            f"# {MARK}\ncomplete -c git-{name} -f -a '(__git_fleet_complete)'\n")
    return out


def script(shell: str) -> str:
    """One script to source (from ~/.bashrc, ~/.zshrc after compinit, or config.fish)."""
    names = list(commands())
    if shell == "bash":
        return next(iter(installed_files("bash").values()))
    if shell == "zsh":
        return (f"# {MARK}: source it after compinit\n"
                f"_git-fleet () {{\n{_template('git-fleet.zsh')}}}\n"
                f"for __git_fleet_c in {' '.join(names)}; do\n"
                "    functions[_git-$__git_fleet_c]=$functions[_git-fleet]\n"
                "    compdef _git-$__git_fleet_c git-$__git_fleet_c\n"
                "done\nunset __git_fleet_c\n")
    files = installed_files("fish")
    return "".join(files[p] for p in sorted(files, key=lambda p: "vendor_completions" in p))


def _zsh_hint(site: Path) -> str | None:
    """A line for a zsh user whose zsh does not look in `site`."""
    zsh = shutil.which("zsh")
    if zsh is None or not os.environ.get("SHELL", "").endswith("zsh"):
        return None
    try:
        fpath = subprocess.run([zsh, "-fc", "print -rl -- $fpath"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    rc = Path(os.environ.get("ZDOTDIR") or Path.home()) / ".zshrc"
    try:
        mentioned = str(site) in rc.read_text(encoding="utf-8", errors="replace").replace("~", str(Path.home()))
    except OSError:
        mentioned = False
    if str(site) in fpath.splitlines() or mentioned:
        return None
    return f"hint: for zsh completion, add fpath+=({site}) to {rc} before compinit"


def install(prefix: Path) -> list[str]:
    """Write every shell's files under PREFIX/share (again: replacing ours, removing our stale
    ones); returns hints for what a shell will not find by itself."""
    share = prefix / "share"
    wanted = {share / rel: text for shell in SHELLS for rel, text in installed_files(shell).items()}
    for d in {p.parent for p in wanted}:
        d.mkdir(parents=True, exist_ok=True)
        for old in d.iterdir():
            if "git-fleet" in old.name and old not in wanted and old.is_file() and MARK in old.read_text(errors="replace"):
                old.unlink()
    for path, text in wanted.items():
        if not path.is_file() or path.read_text(errors="replace") != text:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
    hint = _zsh_hint(share / "zsh/site-functions")
    return [hint] if hint else []


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["complete"] and len(args) >= 2:
        try:
            sys.stderr = open(os.devnull, "w")  # completion never prints an error
            out = "".join(_line(item) + "\n" for item in complete(args[1], args[2:]))
        except BaseException:
            return 0
        sys.stdout.write(out)
        return 0
    if len(args) == 1 and args[0] in SHELLS:
        sys.stdout.write(script(args[0]))
        return 0
    if len(args) == 2 and args[0] == "install":
        try:
            for line in install(Path(args[1])):
                print(line, file=sys.stderr)
        except Exception as e:  # one line, never a traceback
            print(f"error: cannot install shell completion: {e}", file=sys.stderr)
            return 1
        return 0
    print("usage: python -m git_fleet.completion bash|zsh|fish | install PREFIX | complete COMMAND WORD...",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
