"""Shell completion for bash, zsh and fish: `git fleet-NAME <TAB>` and `git-fleet-NAME <TAB>`.

click's own scripts do not fit git: git's completion calls a function per command (bash
_git_fleet_rm, zsh _git-fleet-rm) or hands `git fleet-rm` on to the completion of git-fleet-rm
(fish), and click's variable cannot be named after git-fleet-rm. So each shell gets a small shim
(completions/) that runs `python -m git_fleet.cli.completion complete COMMAND WORD...`, which
answers through click's completion with the callbacks of completers.py. A failure completes
nothing, silently.

    python -m git_fleet.cli.completion bash|zsh|fish   print a shim to source
    python -m git_fleet.cli.completion install PREFIX  install the shims where the shells look

install writes only where it may: a file it wrote before (listed in PREFIX/share/git-fleet/
completion-files, or carrying HEADER, a line the printed scripts never have) is replaced, and
removed once no longer wanted; anything else at one of its paths is left, with a warning.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import click
from click.shell_completion import CompletionItem, ShellComplete

from .. import durable
from .commands import ALL, fleet

SHELLS = ("bash", "zsh", "fish")
MARK = "git-fleet shell completion"  # in every script, printed or installed (how install knew its files before MANIFEST)
# in every file install writes, and in no printed script: a user's saved copy of one is never taken for install's
HEADER = "# Written by `python -m git_fleet.cli.completion install`, which replaces and removes it: do not edit."
# what HEADER was before the module moved into cli/: a file carrying it is install's too
FORMER_HEADER = "# Written by `python -m git_fleet.completion install`, which replaces and removes it: do not edit."
MANIFEST = "git-fleet/completion-files"  # under PREFIX/share: the files install wrote, one a line
DIRS = ("bash-completion/completions", "zsh/site-functions", "fish/vendor_functions.d", "fish/vendor_conf.d",
        "fish/vendor_completions.d")  # under PREFIX/share: the only places install writes or removes


# -- answering the shims ------------------------------------------------------------------------------

def commands() -> dict[str, click.Command]:
    """Each command by its name after `git `: fleet, fleet-add, ..."""
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

def _fish_quote(text: str) -> str:
    """`text` as one fish word: in fish's single quotes, \\ and \\' are escapes."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _template(name: str) -> str:
    text = (resources.files(__package__ or "git_fleet.cli") / "completions" / name).read_text(encoding="utf-8")
    quote = _fish_quote if name.endswith(".fish") else shlex.quote
    return text.replace("@PYTHON@", quote(sys.executable))


def _summary(command: str) -> str:
    cli = commands()[command]
    return " ".join(cli.get_short_help_str(80).split())


def _scripts(shell: str) -> dict[str, str]:
    """The files that make up `shell`'s completion, by their path under PREFIX/share, as scripts
    (without HEADER)."""
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


def _with_header(text: str) -> str:
    """`text` with HEADER after its #compdef and #description lines (which zsh reads first)."""
    lines = text.splitlines(keepends=True)
    at = next((n for n, line in enumerate(lines) if not line.startswith(("#compdef", "#description"))), len(lines))
    return "".join(lines[:at] + [HEADER + "\n"] + lines[at:])


def installed_files(shell: str) -> dict[str, str]:
    """The files install writes for `shell`, by their path under PREFIX/share."""
    return {rel: _with_header(text) for rel, text in _scripts(shell).items()}


def script(shell: str) -> str:
    """One script to source (from ~/.bashrc, ~/.zshrc after compinit, or config.fish)."""
    names = list(commands())
    if shell == "bash":
        return next(iter(_scripts("bash").values()))
    if shell == "zsh":
        return (f"# {MARK}: source it after compinit\n"
                f"_git-fleet () {{\n{_template('git-fleet.zsh')}}}\n"
                f"for __git_fleet_c in {' '.join(names)}; do\n"
                "    functions[_git-$__git_fleet_c]=$functions[_git-fleet]\n"
                "    compdef _git-$__git_fleet_c git-$__git_fleet_c\n"
                "done\nunset __git_fleet_c\n")
    files = _scripts("fish")
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


def _ours(rel: str) -> bool:
    """Whether `rel` (from a manifest) is a path install may write or remove: a file right in DIRS."""
    parent, _, name = rel.rpartition("/")
    return parent in DIRS and name not in ("", ".", "..")


def _listed(manifest: Path) -> set[str] | None:
    """The files an earlier install wrote, from its manifest; None when there is none (no install
    yet, or only one from before the manifest)."""
    try:
        text = manifest.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    return {line for line in text.splitlines() if not line.startswith("#") and _ours(line)}


def _file_text(path: Path) -> str | None:
    """The text of the regular file at `path`; None for anything else (a symlink, a directory):
    install writes regular files only."""
    if path.is_symlink() or not path.is_file():
        return None
    return path.read_text(encoding="utf-8", errors="replace")


def _headed(have: str) -> bool:
    """Whether `have` carries install's header (or the one it had before it moved into cli/)."""
    lines = have.splitlines()
    return HEADER in lines or FORMER_HEADER in lines


def _written_before_the_manifest(have: str, script: str) -> bool:
    """Whether `have`, at the path of `script`, is what an install from before the manifest wrote
    there: the phrase, and the first line of that script (#compdef git-fleet-rm, ...), which a
    printed script saved there under that name does not start with (but for bash's one script)."""
    return MARK in have and have.partition("\n")[0] == script.partition("\n")[0]


def install(prefix: Path) -> list[str]:
    """Write every shell's files under PREFIX/share, and list them in PREFIX/share/MANIFEST.
    Again: a file install wrote (listed, or carrying HEADER) is replaced, and removed once it is
    no longer wanted; anything else at one of its paths is left as it is, with a warning; so a
    user's own files, and their saved copies of the printed scripts, are never touched. Returns
    those warnings and hints for what a shell will not find by itself."""
    share = prefix / "share"
    manifest = share / MANIFEST
    listed = _listed(manifest)
    scripts = {rel: text for shell in SHELLS for rel, text in _scripts(shell).items()}
    wanted = {rel: _with_header(text) for rel, text in scripts.items()}
    told, owned = [], []
    for rel, text in wanted.items():
        path = share / rel
        have = _file_text(path)
        if have is None and not os.path.lexists(path):
            pass
        elif not (have is not None and (rel in (listed or ()) or _headed(have) or (
                listed is None and _written_before_the_manifest(have, scripts[rel])))):
            told.append(f"warning: left {path} as it is: git-fleet's install did not write it "
                        "(move it away and install again to have git-fleet's completion there)")
            continue
        owned.append(rel)
        if have != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            durable.replace(path, text)
    for rel in sorted((listed or set()) - set(wanted)):  # what an older git-fleet installed
        path = share / rel
        have = _file_text(path)
        if have is not None and _headed(have):
            path.unlink()
        elif have is not None:
            told.append(f"warning: left {path} as it is: git-fleet no longer installs it, and it was changed "
                        "since it was installed")
    record = ("# The files `python -m git_fleet.cli.completion install` wrote under PREFIX/share: it replaces them, "
              "and removes them once they are not needed\n" + "".join(f"{rel}\n" for rel in sorted(owned)))
    if _file_text(manifest) != record:
        manifest.parent.mkdir(parents=True, exist_ok=True)
        durable.replace(manifest, record)
    hint = _zsh_hint(share / "zsh/site-functions")
    return told + ([hint] if hint else [])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["complete"] and len(args) >= 2:
        try:
            sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (completion never prints an error; the process ends here)
            out = "".join(_line(item) + "\n" for item in complete(args[1], args[2:]))
        except BaseException:  # noqa: BLE001 (likewise: no candidates, never an error under the cursor)
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
        except Exception as e:  # noqa: BLE001 (one line, never a traceback; the error names what failed)
            print(f"error: cannot install shell completion: {e}", file=sys.stderr)
            return 1
        return 0
    print("usage: python -m git_fleet.cli.completion bash|zsh|fish | install PREFIX | complete COMMAND WORD...",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
