"""Write man/git-fleet-*.1 from the commands' own help, so the two never drift apart.

    python -m git_fleet.cli.manpage man/      regenerate the pages
A test regenerates them in a temporary directory and compares with what is checked in.
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import Any

import click

from .. import __version__
from .commands import ALL, fleet

DATE = "2026-11-24"
ROFF = "\0roff\0"  # marks a section body that is roff already

COMMON_SECTIONS = {
    "EXIT STATUS": "0 on success; 1 when the command was understood and refused (a check failed, or work "
                   "would be lost); 2 for a usage error or a malformed .gitfleet.toml; 3 for an internal error: a bug, "
                   "said in one error: line that names the command, its full traceback written to a log whose path "
                   "the hint: line gives ($GIT_COMMON_DIR/fleet/crashes/, or $XDG_STATE_HOME/git-fleet/ outside a "
                   "repository or where that cannot be written); please report it with that log. Errors are printed on "
                   "standard error as error: and hint: lines, as git does.",
    "ENVIRONMENT": "NO_COLOR turns colour off; colour is only used on a terminal. XDG_STATE_HOME (default "
                   "~/.local/state) holds the logs of internal errors that happen outside a repository.",
}

ZONES = """\
A zone is an ordered list of gitignore patterns, relative to the repository root, exactly as in a
.gitignore file at the root: a pattern without a slash (*.md) matches at any depth; a leading slash
anchors it (/Makefile); a trailing slash matches directories only (build/); ** matches any number
of directories (src/**/test_*.py); ?, [abc], [!a-z] and [[:digit:]] match one byte. A pattern
matches a path when git check-ignore says it would ignore it: the path itself or one of its
leading directories matches.

Where a zone has several patterns, the last one that matches a path decides, and a !pattern takes
paths out. Unlike .gitignore, this works below a matched directory too: ["src/", "!src/**/*.md"]
owns src/a/x.py but not src/a/README.md. GitHub CODEOWNERS differs too: there docs/* does not match
docs/a/b.md; here, as in .gitignore, it does, through the directory docs/a. git fleet-who shows the
pattern that decides for a path."""

EXTRA: dict[str, dict[str, str]] = {
    "git-fleet-add": {"ZONES": ZONES,
                      "EXAMPLES": "git fleet-add backend --zone 'src/backend/**' --zone '!src/backend/**/*.md'\n"
                                  "git fleet-add docs --zone 'docs/' --zone '*.md' --allow-overlap\n"
                                  "git fleet-add api --branch feature/api --path ~/work/api"},
    "git-fleet-who": {"ZONES": ZONES,
                      "EXAMPLES": "git fleet-who src/backend/api.py README.md\n"
                                  "src/backend/api.py: backend (src/backend/**)\n"
                                  "README.md: (no agent: the orchestrator's)"},
    "git-fleet-teleport": {
        "EXAMPLES": "# on the laptop: send the agent to the build box, keep working on other things\n"
                    "git fleet-teleport push backend --remote origin\n"
                    "# on the build box, in a clone of the same repository\n"
                    "git fleet-teleport list\n"
                    "git fleet-teleport pull backend && git fleet-up backend\n"
                    "# later, back on the laptop\n"
                    "git fleet-teleport push backend            (on the build box)\n"
                    "git fleet-teleport pull backend            (on the laptop)",
        "FILES": "refs/fleet/teleport/AGENT on the remote: the parked snapshot; the same ref here: the "
                 "snapshot this clone last sent or received. refs/fleet/backups/AGENT/N: what each pull --force replaced, "
                 "one ref each time.",
    },
    "git-fleet-merge": {
        "FILES": "$GIT_COMMON_DIR/fleet/move-journal: what a merge or sync is about to do, while the branch moves; "
                 "a command that finds it from a killed one finishes or undoes the move. "
                 "$GIT_COMMON_DIR/fleet/checkpoints.log: a line for each merge. "
                 "$GIT_COMMON_DIR/fleet/checkpoint-test.log: the output of the last checkpoint test (up to 16 MiB).",
    },
    "git-fleet-init": {
        "FILES": ".gitfleet.toml in the main worktree: the fleet's configuration; the one copy agents "
                 "cannot change. $GIT_COMMON_DIR/hooks/pre-commit, pre-merge-commit, pre-push, pre-receive: the fleet's hooks; "
                 "HOOK.pre-fleet: the hook that was there before, run first. "
                 "$GIT_COMMON_DIR/fleet/zones.cache: the compiled zones, rebuilt when the configuration changes. "
                 "$GIT_COMMON_DIR/fleet/approved.toml: the configuration as a fleet command last wrote it (the zones "
                 "a merge counts). On a server, $GIT_COMMON_DIR/fleet/signers: the keys of --orchestrator-key and "
                 "--agent-key, in git's allowed-signers format.",
        "PRE-COMMIT FRAMEWORK": "Instead of the installed hooks, add to .pre-commit-config.yaml:\n"
                                "  - repo: <git-fleet repository>\n    rev: <version>\n"
                                "    hooks: [{id: fleet-zone-check}]",
        "SERVER": "On a bare repository that agents push to, run git fleet-init --server [--base BRANCH]. "
                  "Or by hand: put the line git-fleet-check --hook pre-receive in hooks/pre-receive "
                  "(passing standard input on). Pushes to an agent's branch whose new commits change "
                  "paths outside its zone are rejected, whatever the agent's own hooks did; only the branch's "
                  "old value and the base are taken as checked. The base and agents' branches are never "
                  "deleted or force-pushed, and the base moves only by merges of agent branches held to "
                  "their zones (fleet.basePush = merges), or, with --orchestrator-key, only by pushes signed "
                  "with that key (git push --signed, gpg.format = ssh; basePush = signed). --base-push any "
                  "opens it. A hook cannot tell pushers apart otherwise: see the README on what holds.",
    },
}

CHECK_PAGE: dict[str, Any] = {
    "name": "git-fleet-check",
    "summary": "check changes against the committing agent's zone",
    "synopsis": "git fleet-check [--hook pre-commit]\n"
                "git fleet-check --hook pre-push REMOTE URL\n"
                "git fleet-check --hook pre-receive\n"
                "git fleet-check --commits [AGENT...]",
    "description": "The check the fleet's hooks run. In an agent's worktree (found by its registered path, or by its "
                   "branch) the staged change may only add, modify, delete or rename paths inside the "
                   "agent's zone, and never .gitfleet.toml or a hooks directory inside the checkout. Commits in "
                   "the main worktree and on branches of no agent are not restricted. A merge commit changes "
                   "the paths where it differs from git's own merge of its parents (git log --remerge-diff); "
                   "a root commit all its paths; a path with a .., . or .git component is in no zone. Every "
                   "check runs git with the settings it reads pinned (log.showRoot, diff.ignoreSubmodules, "
                   "diff.relative and others), whatever the repository's config says.\n\n"
                   "With --hook pre-push and --hook pre-receive it reads git's ref lines on standard input and "
                   "checks every new commit on an agent's branch; so a commit made with --no-verify does not get "
                   "through a push. On a bare repository the zones come from the base branch's committed "
                   ".gitfleet.toml (the base is fleet.base in git config, or HEAD).\n\n"
                   "With --hook pre-merge-commit (and from pre-commit while a merge is being concluded) it checks "
                   "the new commits of an agent's branch that a plain git merge brings in.\n\n"
                   "With --commits it checks every commit of the named agents (all by default) since the base: "
                   "the gate that does not depend on hooks.\n\n"
                   "Zones are compiled once into $GIT_COMMON_DIR/fleet/zones.cache and read from there while "
                   "the configuration is unchanged, so the check costs little more than one git diff-index.",
    "options": [("--hook NAME", "Run as the named hook: pre-commit, pre-merge-commit, pre-push or pre-receive."),
                ("--commits [AGENT...]", "Check every commit of the agents' branches since the base."),
                ("-h, --help", "Show the usage.")],
}


def _esc(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + ln if ln.startswith((".", "'")) else ln) for ln in text.splitlines())


def _paras(text: str) -> str:
    out = []
    for para in re.split(r"\n\s*\n", text.strip()):
        lines = para.splitlines()
        if lines and lines[0].strip() == "\b":
            lines = lines[1:]
        preformatted = any(ln.startswith("  ") for ln in lines[1:]) or "\n" in para and para.startswith(("git ", "src"))
        if preformatted:
            out.append(".PP\n.nf\n" + _esc("\n".join(lines)) + "\n.fi")
        else:
            out.append(".PP\n" + _esc(" ".join(ln.strip() for ln in lines)))
    return "\n".join(out)


def _page(name: str, summary: str, synopsis: str, description: str, options: list[tuple[str, str]],
          extra: dict[str, str]) -> str:
    parts = [
        f'.TH "{name.upper()}" "1" "{DATE}" "git-fleet {__version__}" "git-fleet manual"',
        ".SH NAME", _esc(f"{name} - {summary}"),
        ".SH SYNOPSIS", ".nf", _esc(synopsis), ".fi",
        ".SH DESCRIPTION", _paras(description),
    ]
    if options:
        parts.append(".SH OPTIONS")
        for flag, text in options:
            parts += [".TP", f"\\fB{_esc(flag)}\\fR", _esc(text)]
    for title, body in {**extra, **COMMON_SECTIONS}.items():
        if body.startswith(ROFF):
            parts += [f".SH {title}", body.removeprefix(ROFF)]
            continue
        parts += [f".SH {title}", ".nf" if title in ("EXAMPLES", "PRE-COMMIT FRAMEWORK") else "",
                  _paras(body) if title not in ("EXAMPLES", "PRE-COMMIT FRAMEWORK") else _esc(body),
                  ".fi" if title in ("EXAMPLES", "PRE-COMMIT FRAMEWORK") else ""]
    others = ["git-fleet", *(f"git-fleet-{n}" for n in ("init", "add", "rm", "list", "who", "zones", "merge",
                                                         "checkpoint", "status", "sync", "task", "plan", "set", "run",
                                                         "up", "ps", "down", "resume", "attach", "teleport", "doctor",
                                                         "prune", "check"))]
    parts += [".SH SEE ALSO", ", ".join(f"\\fB{_esc(o)}\\fR(1)" for o in others if o != name) + ", \\fBgitignore\\fR(5)"]
    return "\n".join(p for p in parts if p != "") + "\n"


def _option_rows(cmd: click.Command, ctx: click.Context) -> list[tuple[str, str]]:
    """Options as `--flag METAVAR` and their help; formatted here, not by click, so that the
    pages do not change with click's version."""
    rows = []
    for param in cmd.params:
        if not isinstance(param, click.Option) or param.hidden:
            continue
        flag = ", ".join(param.opts + param.secondary_opts)
        if not param.is_flag:
            flag += " " + (param.metavar or param.type.name.upper())
        text = param.help or ""
        if param.required:
            text += " Required."
        if param.multiple:
            text += " May be given more than once."
        rows.append((flag, text))
    names = cmd.context_settings.get("help_option_names", ["--help"])
    rows.append((", ".join(names), "Show the help and exit (--help after git shows this page)."))
    return rows


def _usage(cmd: click.Command) -> str:
    pieces = ["[OPTIONS]"]
    for param in cmd.params:
        if isinstance(param, click.Argument):
            name = (param.metavar or param.name or "ARG").upper() + ("..." if param.nargs == -1 else "")
            pieces.append(name if param.required else f"[{name}]")
    if isinstance(cmd, click.Group):
        pieces.append("[COMMAND] [ARGS]...")
    return " ".join(pieces)


def click_page(name: str, cmd: click.Command) -> str:
    prog = "git " + name.removeprefix("git-")
    ctx = cmd.context_class(cmd, info_name=prog, **cmd.context_settings)
    usage = _usage(cmd)
    doc = inspect.cleandoc(cmd.help or "")
    summary, _, body = doc.partition("\n")
    summary = summary.strip().rstrip(".")
    summary = summary[0].lower() + summary[1:]
    extra = dict(EXTRA.get(name, {}))
    synopsis = f"{prog} {usage}"
    if isinstance(cmd, click.Group) and name == "git-fleet":
        body += "\n\nCOMMANDS: " + ", ".join(f"git fleet-{c}" for c in sorted(cmd.commands)) + "."
    elif isinstance(cmd, click.Group):
        synopsis = "\n".join(([f"{prog} {usage.replace(' [COMMAND] [ARGS]...', '')}"] if cmd.invoke_without_command
                               else []) + [f"{prog} {sub} {_usage(c)}" for sub, c in cmd.commands.items()])
        parts = []
        for sub, c in cmd.commands.items():
            text = inspect.cleandoc(c.help or "").replace("\n", " ")
            parts += [".TP", f"\\fB{_esc(f'{prog} {sub} {_usage(c)}')}\\fR", _esc(text)]
            for flag, help_ in _option_rows(c, ctx)[:-1]:
                parts += [".RS", ".TP", f"\\fB{_esc(flag)}\\fR", _esc(help_), ".RE"]
        extra = {"SUBCOMMANDS": ROFF + "\n".join(parts), **extra}
    return _page(name, summary, synopsis, body.strip() or summary, _option_rows(cmd, ctx), extra)


def pages() -> dict[str, str]:
    out = {"git-fleet": click_page("git-fleet", fleet)}
    for name, cmd in ALL.items():
        out[f"git-fleet-{name}"] = click_page(f"git-fleet-{name}", cmd)
    c = CHECK_PAGE
    out["git-fleet-check"] = _page(c["name"], c["summary"], c["synopsis"], c["description"], c["options"], {})
    return out


def main(argv: list[str]) -> int:
    target = Path(argv[0] if argv else "man")
    target.mkdir(exist_ok=True)
    for name, text in pages().items():
        (target / f"{name}.1").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
