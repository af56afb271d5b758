"""Shell completion in the real shells, with the shims installed as install.sh installs them:
bash through git's own completion (and bash-completion's loader), zsh through _git, fish
through its git completion; and each `git-fleet-NAME` typed directly."""

from __future__ import annotations

import os
import re
import select
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from git_fleet.cli import completion
from helpers import Sandbox

GIT_BASH = Path("/usr/share/bash-completion/completions/git")  # shipped with git (Debian)
BASH_COMPLETION = Path("/usr/share/bash-completion/bash_completion")
SUBCOMMANDS = {"add", "list", "show", "claim", "renew", "release", "done", "fail", "path"}


class Fleet:
    """A fleet to complete in, and places to complete from."""

    def __init__(self, sb: Sandbox, home: Path):
        self.sb = sb
        self.home = home
        self.repo = sb.repo
        self.backend = sb.add_agent("backend", "src/backend/**")
        sb.add_agent("web", "src/frontend/**")
        cfg = sb.repo / ".gitfleet.toml"
        cfg.write_text(cfg.read_text() + '\n[checkpoints.phase-1]\nagents = ["backend", "web"]\n')
        sb.fleet("task", "add", "Orders API", "--agent", "backend")
        sb.fleet("task", "add", "Cart page")
        sb.fleet("task", "claim", "--agent", "backend")
        self.nowhere = sb.root / "nowhere"  # no repository
        self.nowhere.mkdir()
        self.broken = sb.make_repo({"a.txt": "a\n"}, path=sb.root / "broken")
        (self.broken / ".gitfleet.toml").write_text("[fleet\nbase = \n")


@pytest.fixture
def home(hermetic: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME, with the shims installed as install.sh installs them with PREFIX=~/.local (where
    each shell looks by itself)."""
    for var in ("XDG_DATA_HOME", "XDG_DATA_DIRS", "BASH_COMPLETION_USER_DIR", "ZDOTDIR"):
        monkeypatch.delenv(var, raising=False)
    done = subprocess.run([sys.executable, "-m", "git_fleet.cli.completion", "install", str(hermetic / ".local")],
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "" and "Traceback" not in done.stderr, done.stderr
    return hermetic


@pytest.fixture
def fleet(fleet_repo: Sandbox, home: Path) -> Fleet:
    return Fleet(fleet_repo, home)


def words_of(line: str) -> list[str]:
    """COMP_WORDS as bash splits the line (COMP_WORDBREAKS has = in it)."""
    words = re.findall(r"=|[^\s=]+", line)
    return words + [""] if line.endswith(" ") else words


BASH_HARNESS = r"""
comp () {  # DIR LINE WORD...: complete LINE as bash would at its end; prints COMPREPLY
    cd "$1" || return; COMP_LINE=$2 COMP_POINT=${#2}; shift 2
    COMP_WORDS=("$@") COMP_CWORD=$(($# - 1)) COMPREPLY=()
    local spec f
    spec=$(complete -p "$1" 2>/dev/null) || {
        declare -F _completion_loader >/dev/null && _completion_loader "$1"  # what complete -D does
        spec=$(complete -p "$1" 2>/dev/null)
    }
    f=${spec#*-F } f=${f%% *}
    [[ -z $spec ]] || "$f" "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
    local IFS=$'\x1f'; printf '%s\n' "${COMPREPLY[*]}"
}
"""


def bash(cases: list[tuple[Path, str]], setup: str) -> tuple[list[list[str]], str]:
    script = setup + BASH_HARNESS + "".join(
        f"comp {shlex.quote(str(d))} {shlex.quote(line)} {shlex.join(words_of(line))}\n" for d, line in cases)
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    replies = [line.split("\x1f") if line else [] for line in done.stdout.split("\n")[:-1]]
    assert len(replies) == len(cases), done.stdout
    return replies, done.stderr


def needs(*paths: Path) -> None:
    for p in paths:
        if not p.exists():
            pytest.skip(f"{p} is not installed (Debian: apt-get install git bash-completion)")


@pytest.mark.parametrize("loader", [True, False], ids=["bash-completion-loads-the-shim", "shim-sourced-by-hand"])
def test_bash_git_completion_completes_agents_checkpoints_tasks(fleet: Fleet, loader: bool) -> None:
    needs(GIT_BASH, *([BASH_COMPLETION] if loader else []))
    installed = fleet.home / ".local/share/bash-completion/completions/git-fleet"
    # with bash-completion, git's completion loads git-fleet-rm from ~/.local/share/bash-completion
    # itself; without it, a user sources the shim (or the printed one) from ~/.bashrc
    setup = (f". {BASH_COMPLETION}\n. {GIT_BASH}\n" if loader
             else f". {GIT_BASH}\n. {shlex.quote(str(installed))}\n")
    repo, agent = fleet.repo, fleet.backend
    cases = {
        (repo, "git fleet-rm "): ["backend ", "web "],
        (repo, "git fleet-rm w"): ["web "],
        (repo, "git-fleet-rm "): ["backend ", "web "],  # typed directly
        (repo, "git fleet-merge --checkpoint "): ["phase-1 "],
        (repo, "git fleet-merge --checkpoint=p"): ["phase-1 "],
        (repo, "git fleet-merge backend "): ["web "],  # not twice
        (repo, "git fleet-task done "): ["task-001 "],  # what is claimed
        (repo, "git fleet-task show "): ["task-001 ", "task-002 "],
        (repo, "git fleet-task show 2"): ["2 "],
        (agent, "git fleet-task renew "): ["task-001 "],  # in an agent's worktree
        (repo, "git-fleet-task list --agent "): ["backend ", "web "],
        (repo, "git fleet task add x --ag"): ["--agent "],  # git fleet: the group
        (repo, "git fleet-who sr"): ["src"],  # paths: the shell's file names
        (fleet.nowhere, "git fleet-rm "): [],  # no repository: nothing, silently
        (fleet.broken, "git fleet-rm "): [],  # a broken config: nothing, silently
    }
    if not loader:
        cases = {k: v for k, v in list(cases.items())[:3]}
    cases[(repo, "git fleet-task ")] = sorted(SUBCOMMANDS)  # checked as a subset below
    replies, err = bash(list(cases), setup)
    for (where, line), want, got in zip(cases, cases.values(), replies, strict=True):
        if line == "git fleet-task ":
            assert {g.strip() for g in got} >= SUBCOMMANDS, got
        else:
            assert got == want, f"{line!r} in {where.name}: {got}"
    assert err == "", err


def test_shells_find_the_shims_where_they_look(home: Path) -> None:
    """bash-completion's own search (what `git fleet-NAME` and `git-fleet-NAME` trigger) finds
    every command's file under ~/.local/share/bash-completion/completions; zsh's _git lists
    fleet-NAME with its description from ~/.local/share/zsh/site-functions/_git-fleet-NAME."""
    rm = (home / ".local/share/zsh/site-functions/_git-fleet-rm").read_text().splitlines()
    assert rm[0] == "#compdef git-fleet-rm" and rm[1].startswith("#description Remove an agent")
    needs(BASH_COMPLETION)
    names = [f"git-{name}" for name in completion.commands()]
    script = f". {BASH_COMPLETION}\n" + "".join(
        f"__load_completion {n} && complete -p {n} >/dev/null && declare -F _git_{n[4:].replace('-', '_')} >/dev/null"
        f" && echo {n}\n" for n in names)
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True, text=True)
    assert done.stdout.split() == names, done.stdout + done.stderr


def _zsh(fleet: Fleet, cases: list[tuple[Path, str]]) -> list[set[str]]:
    """Type each line and TAB in an interactive zsh on a terminal; the matches zsh is given are
    caught by wrapping compadd."""
    out = fleet.sb.root / "zsh-matches"
    out.write_text("")
    setup = (
        f"fpath=({fleet.home}/.local/share/zsh/site-functions $fpath); autoload -Uz compinit; compinit -u -D; bindkey -e\n"
        "compadd () { if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\\ * ]]; then builtin compadd \"$@\"; return; fi; "
        f"local -a hits; builtin compadd -A hits \"$@\"; print -rl -- $hits >> {out}; builtin compadd \"$@\"; }}\n"
        f"__tab () {{ zle complete-word; print -r -- '--- done' >> {out}; }}; zle -N __tab; bindkey '^I' __tab\n")
    master, slave = os.openpty()
    proc = fleet.sb.spawn(["zsh", "-f", "-i"], env={"TERM": "xterm"}, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    screen = b""

    def wait(what: str, count: int) -> None:
        nonlocal screen
        deadline = time.time() + 20
        while out.read_text().count(what) < count:
            assert time.time() < deadline, f"zsh did not answer:\n{screen.decode(errors='replace')}"
            if select.select([master], [], [], 0.05)[0]:
                screen += os.read(master, 65536)

    try:
        os.write(master, setup.encode())
        for n, (where, line) in enumerate(cases, 1):
            os.write(master, f"cd {shlex.quote(str(where))}; print -r -- '--- ready' >> {out}\n".encode())
            wait("--- ready", n)
            os.write(master, (line + "\t").encode())
            wait("--- done", n)
            os.write(master, b"\x15")  # ^U: a new line
    finally:
        Sandbox.kill_group(proc)
        os.close(master)
    assert not re.search(rb"(?i)Traceback|error:|not found|no such file|unknown command", screen), \
        screen.decode(errors="replace")
    found: list[set[str]] = []
    for line in out.read_text().splitlines():
        if line == "--- ready":
            found.append(set())
        elif line != "--- done":
            found[-1].add(line)
    return found


def test_zsh_git_completion_completes_agents_checkpoints_tasks(fleet: Fleet) -> None:
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed (Debian: apt-get install zsh)")
    cases = {
        (fleet.repo, "git fleet-rm "): {"backend", "web"},  # _git calls _git-fleet-rm
        (fleet.repo, "git-fleet-rm "): {"backend", "web"},  # #compdef git-fleet-rm
        (fleet.repo, "git fleet-task done "): {"task-001"},
        (fleet.repo, "git fleet-merge --checkpoint="): {"phase-1"},
        (fleet.nowhere, "git fleet-rm "): set(),
    }
    found = _zsh(fleet, list(cases))
    assert found == list(cases.values())


def test_fish_git_completion_completes_agents_checkpoints_tasks(fleet: Fleet) -> None:
    if shutil.which("fish") is None:
        pytest.skip("fish is not installed (Debian: apt-get install fish)")
    cases = {
        (fleet.repo, "git fleet-rm "): ["backend", "web"],  # fish's git completion hands it on
        (fleet.repo, "git-fleet-rm "): ["backend", "web"],
        (fleet.repo, "git fleet-task done "): ["task-001"],
        (fleet.repo, "git -C . fleet-merge --checkpoint="): ["--checkpoint=phase-1"],
        (fleet.backend, "git-fleet-task show "): ["task-001", "task-002"],
        (fleet.repo, "git commit -m fleet"): [],  # not ours
        (fleet.nowhere, "git fleet-rm "): [],
    }
    script = "".join(f"cd {shlex.quote(str(d))}; complete -C {shlex.quote(line)}; echo '---'\n" for d, line in cases)
    done = subprocess.run(["fish", "-c", script], capture_output=True, text=True, timeout=60)
    got = [[c.split("\t")[0] for c in block.strip("\n").splitlines()] for block in done.stdout.split("---\n")[:-1]]
    assert got == list(cases.values()), done.stdout
    assert done.stderr == "", done.stderr


def fish(cases: list[tuple[Path, str]], setup: str = "") -> tuple[list[list[str]], str]:
    """What `complete -C LINE` offers in fish, from each directory; and what fish printed on stderr."""
    script = setup + "".join(f"cd {shlex.quote(str(d))}; complete -C {shlex.quote(line)}; echo '---'\n"
                             for d, line in cases)
    done = subprocess.run(["fish", "-c", script], capture_output=True, text=True, timeout=60)
    got = [[c.split("\t")[0] for c in block.strip("\n").splitlines()] for block in done.stdout.split("---\n")[:-1]]
    assert len(got) == len(cases), done.stdout + done.stderr
    return got, done.stderr


def test_a_missing_interpreter_completes_nothing_silently(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """The venv the shims were installed from is deleted (or git-fleet was reinstalled under
    another Python, whose shims were then removed): every shell completes nothing and prints nothing."""
    gone = fleet.home / "old venv" / "it's gone" / "bin" / "python"  # never there: a deleted venv
    monkeypatch.setattr(sys, "executable", str(gone))
    completion.install(fleet.home / ".local")
    rm = fleet.home / ".local/share/zsh/site-functions/_git-fleet-rm"
    assert "old venv" in rm.read_text()
    repo = fleet.repo
    lines = ["git fleet-rm ", "git-fleet-rm ", "git fleet-task done ", "git-fleet-task show "]
    if GIT_BASH.exists() and BASH_COMPLETION.exists():
        replies, err = bash([(repo, line) for line in lines], f". {BASH_COMPLETION}\n. {GIT_BASH}\n")
        assert (replies, err) == ([[]] * len(lines), ""), err
    if shutil.which("zsh"):
        assert _zsh(fleet, [(repo, line) for line in lines]) == [set()] * len(lines)
    if shutil.which("fish"):
        got, err = fish([(repo, line) for line in lines])
        assert (got, err) == ([[]] * len(lines), ""), err


def test_task_ids_are_those_the_command_takes_from_whoever_completes(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """rm: tasks never claimed that nothing waits for; cancel: tasks not ended; done, renew,
    release and fail: the tasks the completing agent holds (--agent, $FLEET_AGENT, the worktree's
    agent; from the main worktree, anyone's), a spec broken by hand after the claim included;
    rm and cancel, the orchestrator's only, complete nothing for an agent."""
    needs(GIT_BASH, BASH_COMPLETION)
    sb = fleet.sb
    # task-001 is claimed by backend, task-002 is open (Fleet)
    sb.fleet("task", "add", "Search", "--agent", "web", "--priority", "9")
    assert sb.fleet("task", "claim", "--agent", "web").out.startswith("task-003")
    sb.fleet("task", "add", "Logs", "--agent", "backend", "--priority", "9")
    assert sb.fleet("task", "claim", "--agent", "backend").out.startswith("task-004")
    spec = next((fleet.repo / "tasks").glob("task-004-*.md"))
    spec.write_text("---\ntitle: Logs\nthis line is wrong\n---\n")  # broken by hand: task-004 is invalid
    sb.fleet("task", "add", "Docs", "--agent", "backend", "--priority", "9")
    assert sb.fleet("task", "claim", "--agent", "backend").out.startswith("task-005")
    sb.fleet("task", "done", "5", "--agent", "backend")
    sb.fleet("task", "add", "Retry", "--agent", "backend", "--priority", "9")
    assert sb.fleet("task", "claim", "--agent", "backend").out.startswith("task-006")
    sb.fleet("task", "release", "6", "--agent", "backend")  # open again, but claimed once: rm refuses it
    sb.fleet("task", "add", "Checkout")
    sb.fleet("task", "add", "Pay", "--depends", "7")  # rm refuses task-007: task-008 waits for it
    listed = {line.split()[0]: line.split()[1] for line in sb.fleet("task", "list").out.splitlines()
              if line.startswith("task-")}
    assert listed == {"task-001": "claimed", "task-002": "open", "task-003": "claimed", "task-004": "invalid",
                      "task-005": "done", "task-006": "open", "task-007": "open", "task-008": "open"}, listed
    ids = lambda *n: [f"task-00{i} " for i in n]  # noqa: E731
    main, backend = fleet.repo, fleet.backend
    cases = {
        (main, "git fleet-task rm "): ids(2, 8),
        (main, "git fleet-task cancel "): ids(1, 2, 3, 4, 6, 7, 8),
        (main, "git fleet-task done "): ids(1, 3, 4),  # no agent known: anyone's
        (main, "git fleet-task renew --agent web "): ids(3),
        (main, "git-fleet-task fail --agent backend "): ids(1, 4),
        (backend, "git fleet-task done "): ids(1, 4),  # backend's worktree
        (backend, "git fleet-task release "): ids(1, 4),
        (backend, "git fleet-task renew --agent web "): ids(3),
        (backend, "git fleet-task rm "): [],
        (backend, "git fleet-task cancel "): [],
        (main, "git fleet-task show "): ids(1, 2, 3, 4, 5, 6, 7, 8),
    }
    setup = f". {BASH_COMPLETION}\n. {GIT_BASH}\n"
    replies, err = bash(list(cases), setup)
    assert dict(zip(cases, replies, strict=True)) == cases and err == "", err
    monkeypatch.setenv("FLEET_AGENT", "web")  # in web's session, in the main worktree
    session = {(main, "git fleet-task done "): ids(3), (main, "git fleet-task rm "): [],
               (main, "git fleet-task done --agent backend "): ids(1, 4)}
    replies, err = bash(list(session), setup)
    assert dict(zip(session, replies, strict=True)) == session and err == "", err
    monkeypatch.delenv("FLEET_AGENT")
    if shutil.which("fish"):
        got, err = fish([(backend, "git fleet-task done "), (main, "git-fleet-task rm "), (main, "git fleet-task done ")])
        assert (got, err) == ([["task-001", "task-004"], ["task-002", "task-008"], ["task-001", "task-003", "task-004"]],
                              ""), err
        got, err = fish([(main, "git fleet-task done ")], "set -gx FLEET_AGENT web\n")
        assert (got, err) == ([["task-003"]], ""), err


def tree(root: Path) -> dict[Path, tuple[str, int]]:
    """Every file under `root`: its text and when it was last written."""
    return {p: (p.read_text(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def install_cli(prefix: Path) -> subprocess.CompletedProcess[str]:
    """The installer, as install.sh runs it."""
    return subprocess.run([sys.executable, "-I", "-m", "git_fleet.cli.completion", "install", str(prefix)],
                          capture_output=True, text=True, timeout=60)


def test_printed_shims_are_valid_scripts_and_install_is_idempotent(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHELL", raising=False)  # no zsh hint: install says nothing
    for shell in completion.SHELLS:
        printed = completion.script(shell)
        assert completion.MARK in printed and completion.HEADER not in printed.splitlines(), shell
        if shutil.which(shell):
            check = subprocess.run([shell, "-n"], input=printed, capture_output=True, text=True)
            assert check.returncode == 0, f"{shell}: {check.stderr}"
    share = home / ".local/share"
    manifest = share / "git-fleet/completion-files"
    listed = [line for line in manifest.read_text().splitlines() if not line.startswith("#")]
    installed = sorted(str(p.relative_to(share)) for p in share.rglob("*") if p.is_file() and p != manifest)
    assert sorted(listed) == installed and len(installed) == 3 * len(completion.commands()) + 2
    assert all(completion.HEADER in (share / rel).read_text().splitlines() for rel in listed)
    before = tree(share)
    done = install_cli(home / ".local")  # again: nothing to do, nothing said
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "") and tree(share) == before
    # files an install without a manifest (an older git-fleet) wrote, with the phrase and no
    # header: taken as its own, replaced quietly, and listed from then on
    manifest.unlink()
    for rel in listed:
        p = share / rel
        p.write_text("".join(line for line in p.read_text().splitlines(True) if line.rstrip("\n") != completion.HEADER))
    done = install_cli(home / ".local")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert {p: t for p, (t, _) in tree(share).items()} == {p: t for p, (t, _) in before.items()}


def test_install_replaces_and_removes_only_the_files_it_wrote(hermetic: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's own file where install would put one is left, with a warning naming it; copies of
    the printed scripts saved beside the installed files (they carry the phrase "git-fleet shell
    completion" too) are never removed; the files of a command that is no more are."""
    monkeypatch.delenv("SHELL", raising=False)  # no zsh hint: what install says is the warnings alone
    prefix = hermetic / "prefix"
    share = prefix / "share"
    mine = {share / "bash-completion/completions/git-fleet-task": "complete -F _my_fleet_task git-fleet-task\n",
            share / "zsh/site-functions/_git-fleet-rm": "#compdef git-fleet-rm\n_message 'my own'\n",
            # the printed zsh script saved under a name install uses: not what install wrote there
            share / "zsh/site-functions/_git-fleet-merge": completion.script("zsh")}
    for p, text in mine.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    # an older git-fleet, with one more command (fleet-gone), installs first
    commands = completion.commands
    with monkeypatch.context() as m:
        m.setattr(completion, "commands", lambda: {**commands(), "fleet-gone": commands()["fleet-rm"]})
        told = completion.install(prefix)
    assert sorted(told) == sorted(f"warning: left {p} as it is: git-fleet's install did not write it (move it away "
                                  "and install again to have git-fleet's completion there)" for p in mine), told
    gone = [share / "bash-completion/completions/git-fleet-gone", share / "zsh/site-functions/_git-fleet-gone",
            share / "fish/vendor_completions.d/git-fleet-gone.fish"]
    assert all(p.is_file() for p in gone)
    # the user saves the printed scripts, as the README says they may, next to the installed ones
    saved = {}
    for shell, rel in (("zsh", "zsh/site-functions/_git-fleet-myalias"),
                       ("bash", "bash-completion/completions/git-fleet-notes.txt"),
                       ("fish", "fish/vendor_completions.d/git-fleet-mine.fish")):
        printed = subprocess.run([sys.executable, "-m", "git_fleet.cli.completion", shell], capture_output=True,
                                 text=True, check=True).stdout
        assert completion.MARK in printed
        (share / rel).write_text(printed)
        saved[share / rel] = printed
    (share / "zsh/site-functions/git-fleet-note").write_text(f"{completion.MARK}: remember to add fpath\n")
    saved[share / "zsh/site-functions/git-fleet-note"] = f"{completion.MARK}: remember to add fpath\n"
    for run in range(2):  # this version installs, twice: the same each time
        done = install_cli(prefix)
        assert done.returncode == 0 and done.stdout == "", done.stderr
        assert sorted(done.stderr.splitlines()) == sorted(told), done.stderr
        assert not any(p.exists() for p in gone)
        assert {p: p.read_text() for p in {**mine, **saved}} == {**mine, **saved}
        if run == 0:
            first = tree(share)
    assert tree(share) == first
    manifest = (share / "git-fleet/completion-files").read_text()
    assert "git-fleet-gone" not in manifest and "git-fleet-myalias" not in manifest
    assert "bash-completion/completions/git-fleet-task\n" not in manifest
    # the user takes theirs away: now install puts its own there, and says nothing
    for p in mine:
        p.unlink()
    done = install_cli(prefix)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert all(completion.HEADER in p.read_text().splitlines() for p in mine)
    assert {p: p.read_text() for p in saved} == saved


def test_bad_input_completes_nothing_without_a_traceback(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "git_fleet.cli.completion", *args], capture_output=True, text=True,
                              cwd=tmp_path)

    for args in (["complete", "fleet-nosuch", ""], ["complete", "fleet-rm", "--force", "--nosuch", "a", "b", ""],
                 ["complete", "fleet-task", "done", "x" * 300], ["complete", "fleet-merge", "--checkpoint="]):
        done = run(*args)
        assert (done.returncode, done.stdout, done.stderr) == (0, "", ""), args
    usage = run("complete")
    assert usage.returncode == 2 and usage.stderr.startswith("usage:") and "Traceback" not in usage.stderr
