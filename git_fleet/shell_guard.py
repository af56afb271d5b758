"""The shell commands an agent CLI's hook refuses: the ones that would skip the fleet's gates.

A guard for an agent that cooperates, not a shell parser: it reads the command's words (as a
POSIX shell splits them) and refuses a commit, merge or push without its hooks (`--no-verify`,
`git commit -n`), moving the hooks away (`core.hooksPath`, a config include), switching the agent
CLI's hooks off (`disableAllHooks`), and writing to the fleet's configuration, the agent CLIs'
settings or the git directory's hooks and config. A command built at run time (`eval`, a script
file, a variable) gets past it; the commit hook, the merge and the server check the zones again,
and only the sandbox makes the files read-only (README: "What the hooks do not cover").
"""

from __future__ import annotations

import os
import re
import shlex

from .errors import FleetError

_SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", "{", "}", "\n", "!"}
# words after which the next word is the command run (`env X=1 git ...`, `sudo git ...`)
_PREFIXES = {"env", "sudo", "command", "exec", "nohup", "time", "nice", "xargs", "then", "do", "else"}
# git's options that take their value as the next word, before the subcommand
_GIT_VALUE_OPTIONS = {"-C", "-c", "--git-dir", "--work-tree", "--namespace", "--exec-path", "--config-env"}
# a command that only reads: naming a protected file in it is fine (`cat .gitfleet.toml`)
_READERS = {"cat", "less", "more", "head", "tail", "grep", "rg", "ls", "wc", "stat", "file", "diff", "git", "echo",
            "printf", "test", "[", "realpath", "readlink", "find", "jq", "bat", "view", "sort", "uniq", "cut"}
_HOOKS_OFF = re.compile(r"core\.hookspath|disableallhooks|includeif\.|include\.path", re.IGNORECASE)


def _words(command: str) -> list[str]:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError:  # an unclosed quote: judge the words as whitespace splits them
        return command.split()


def _simple_commands(words: list[str]) -> list[list[str]]:
    """The words split at the shell's separators, each with its leading assignments and
    prefixes (`env`, `sudo`, ...) taken off."""
    commands: list[list[str]] = [[]]
    for word in words:
        if word in _SEPARATORS or (word and set(word) <= set(";&|()")):
            commands.append([])
        else:
            commands[-1].append(word)
    simple = []
    for cmd in commands:
        while cmd and (cmd[0] in _PREFIXES or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", cmd[0])):
            cmd = cmd[1:]
        if cmd:
            simple.append(cmd)
    return simple


def _git_subcommand(cmd: list[str]) -> tuple[str, list[str]] | None:
    """(subcommand, its arguments) of a git command line; None for anything else."""
    if os.path.basename(cmd[0]) != "git":
        return None
    i = 1
    while i < len(cmd) and cmd[i].startswith("-"):
        i += 2 if cmd[i] in _GIT_VALUE_OPTIONS else 1
    return (cmd[i], cmd[i + 1:]) if i < len(cmd) else None


# git commit's short options whose value may follow in the same word or the next
_COMMIT_VALUE_OPTIONS = ("-m", "-F", "-C", "-c", "-t")


def _no_verify(arg: str) -> bool:
    """--no-verify, or an abbreviation of it that git takes (git accepts a long option's prefix)."""
    return len(arg) >= len("--no-v") and "--no-verify".startswith(arg)


def _skips_verify(sub: str, args: list[str]) -> bool:
    value_next = False
    for arg in args:
        if value_next or arg == "--":
            value_next = False
            if arg == "--":
                break
            continue
        if _no_verify(arg):
            return True
        if sub == "commit" and re.fullmatch(r"-[a-zA-Z]+", arg):
            for i, flag in enumerate(arg[1:]):
                if "-" + flag in _COMMIT_VALUE_OPTIONS:
                    value_next = i == len(arg) - 2  # (-m MSG; -mMSG holds its value)
                    break
                if flag == "n":
                    return True
    return False


_SHELLS = {"sh", "bash", "zsh", "dash", "ksh"}
_CONFIG_READS = {"--get", "--get-all", "--get-regexp", "-l", "--list", "get", "list", "--show-origin"}


def _inner_script(cmd: list[str]) -> str | None:
    """The script of `sh -c SCRIPT` (-lc, -ec... too) or `eval WORDS`: judged as a command."""
    if os.path.basename(cmd[0]) == "eval":
        return " ".join(cmd[1:])
    if os.path.basename(cmd[0]) in _SHELLS:
        for i, arg in enumerate(cmd[1:], 1):
            if re.fullmatch(r"-[a-zA-Z]*c[a-zA-Z]*", arg) and i + 1 < len(cmd):
                return cmd[i + 1]
    return None


def _hooks_off(cmd: list[str], git: tuple[str, list[str]] | None) -> str | None:
    """The word that moves or switches off hooks, in a command that would act on it: git setting
    it (`-c`, `git config`), or any program but one that only reads (`grep hooksPath` is fine)."""
    if git is not None and git[0] == "config" and _CONFIG_READS & set(git[1]):
        return None
    if git is None and cmd[0] in _READERS:
        return None
    return next((m.group(0) for w in cmd[1:] if (m := _HOOKS_OFF.search(w))), None)


def judge(command: str, protected: list[str], depth: int = 0) -> FleetError | None:
    """Why the agent may not run `command`, or None. `protected`: paths (as the agent would name
    them, absolute or relative to its worktree) that no command of the agent may write."""
    words = _words(command)
    for cmd in _simple_commands(words):
        inner = _inner_script(cmd)
        if inner is not None and depth < 4:
            refusal = judge(inner, protected, depth + 1)
            if refusal is not None:
                return refusal
        git = _git_subcommand(cmd)
        if git and _skips_verify(*git):
            return FleetError(f"command refused: `git {git[0]}` without its hooks (--no-verify or -n) skips the "
                              "fleet's zone check",
                              f"run it without --no-verify/-n; if the hook refuses the {git[0]}, it names the paths "
                              "outside your zone and what to do")
        off = _hooks_off(cmd, git)
        if off:
            return FleetError(f"command refused: it sets {off}, which moves or switches off the hooks that check "
                              "your zone",
                              "commit as usual: the fleet's hooks run, and say which paths are outside your zone")
        written = cmd[1:]
        if cmd[0] in _READERS and not (git and git[0] in ("config", "update-index", "hook")):
            written = [w for before, w in zip(cmd, cmd[1:], strict=False) if before in (">", ">>", ">|")]
        for word in written:
            hit = _protected(word, protected)
            if hit:
                return FleetError(f"command refused: it may write {hit}, which no agent changes",
                                  "ask the orchestrator for the change: a task for it, or a wider zone set from the "
                                  "main worktree")
    return None


def _protected(word: str, protected: list[str]) -> str | None:
    """The protected path `word` names, as itself or inside it (`open('.gitfleet.toml', 'w')`)."""
    for p in protected:
        if re.search(r"(?:^|[^\w.-])" + re.escape(p.rstrip("/")) + r"(?:$|/|[^\w.-])", word):
            return p
    return None
