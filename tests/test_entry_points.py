"""Every command's bad input, through the installed entry point as git starts it (issue 19).

The other tests mostly run the commands in process, through click; these run the real program,
`git fleet-NAME ...`, as a separate process: the console script pip installed, its imports at
start-up, the environment git passes, no terminal (stdin is /dev/null, the output is captured).
Each case asserts the exit status (1 refused, 2 misused), an `error:` line that names the thing
(and the `hint:` where the command gives one), no traceback, and that nothing half-done was left:
the refs, the main worktree's status and config, the worktrees and the directories around.

The commands come from `[project.scripts]` in pyproject.toml: a new one without a case here fails
test_every_installed_command_has_a_case.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import Sandbox

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
SCRIPTS = sorted(tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["scripts"])

BROKEN_TOML = '[fleet]\nbase = "main"\nbroken = \n'  # line 3: a key without a value


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]  # after `git`: ("fleet-merge", "ghost"), or ("fleet", ...) for the umbrella
    code: int  # 1: refused, 2: misused
    names: tuple[str, ...]  # what the error lines must say; {root}, {repo} and {config} are filled in
    hint: str | None = None  # what a hint line must say ("" for any hint); None: no hint required
    where: str = "fleet"  # outside, bare, plain, fleet (no agents), fleet1 (backend), fleet2 (backend, web)
    cwd: str = "repo"  # a directory under the sandbox's root
    prepare: Callable[[Sandbox], None] | None = None
    xfail: str | None = None

    @property
    def script(self) -> str:
        return "git-" + self.args[0]


# -- what some cases need first ------------------------------------------------------------------

def broken_config(sb: Sandbox) -> None:
    (sb.repo / ".gitfleet.toml").write_text(BROKEN_TOML)


def mistyped_config(sb: Sandbox) -> None:
    cfg = sb.repo / ".gitfleet.toml"
    text = cfg.read_text()
    assert "\nmax_agents = 10\n" in text
    cfg.write_text(text.replace("\nmax_agents = 10\n", '\nmax_agents = "ten"\n'))


def checkpoint_of_a_ghost(sb: Sandbox) -> None:
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text() + '\n[checkpoints.phase-9]\nagents = ["ghost"]\n')


def out_of_zone_commit(sb: Sandbox) -> None:
    """backend commits the orchestrator's README.md, past its commit hook."""
    sb.commit(sb.root / "repo-backend", {"README.md": "# mine now\n"}, "backend: readme", extra=("--no-verify",))


def base_moved_and_backend_dirty(sb: Sandbox) -> None:
    sb.commit(sb.repo, {"docs/guide.md": "# guide, v2\n"}, "orchestrator: guide v2")
    (sb.root / "repo-backend/src/backend/api.py").write_text("def api(): return 3  # not committed\n")


def backend_committed(sb: Sandbox) -> None:
    sb.commit(sb.root / "repo-backend", {"src/backend/api.py": "def api(): return 2\n"}, "backend: api v2")


def backend_committed_and_merged(sb: Sandbox) -> None:
    backend_committed(sb)
    sb.git("fleet-merge", "backend")


def a_task(sb: Sandbox) -> None:
    sb.fleet("task", "add", "First")


def a_task_claimed_by_backend(sb: Sandbox) -> None:
    sb.fleet("task", "add", "First")
    sb.fleet("task", "claim", "--agent", "backend")


def staged_outside_the_zone(sb: Sandbox) -> None:
    wt = sb.root / "repo-backend"
    sb.write_files({"docs/backend.md": "# backend notes\n"}, wt)
    sb.git("add", "docs/backend.md", cwd=wt)


def staged_with_a_broken_config(sb: Sandbox) -> None:
    wt = sb.root / "repo-backend"
    sb.write_files({"src/backend/new.py": "x = 1\n"}, wt)
    sb.git("add", "src/backend/new.py", cwd=wt)
    broken_config(sb)


def a_full_directory(sb: Sandbox) -> None:
    (sb.root / "outside/full").mkdir()
    (sb.root / "outside/full/keep.txt").write_text("mine\n")


# -- the cases ----------------------------------------------------------------------------------------

C = Case
CASES = [
    # git fleet: the umbrella command
    C("fleet-unknown-option", ("fleet", "--bogus"), 2, ("'--bogus'",), "git fleet -h"),
    C("fleet-unknown-command", ("fleet", "nosuch"), 2, ("'nosuch'",), "git fleet -h"),
    C("fleet-subcommand-missing-argument", ("fleet", "add"), 2, ("Missing argument 'NAME'",), "git fleet add -h"),
    # demo
    C("demo-directory-not-empty", ("fleet-demo", "full"), 2, ("{root}/outside/full",), "new directory",
      where="outside", cwd="outside", prepare=a_full_directory),
    C("demo-keep-without-tmux", ("fleet-demo", "--keep", "new"), 2, ("--keep", "--tmux"), "--tmux --keep",
      where="outside", cwd="outside"),
    # init
    C("init-bad-choice", ("fleet-init", "--base-push", "nope"), 2, ("'--base-push'", "'nope'"), "git fleet-init -h",
      where="plain"),
    C("init-malformed-agent-key", ("fleet-init", "--server", "--agent-key", "backend"), 2, ("--agent-key backend",),
      "--agent-key backend=", where="plain"),
    C("init-interactive-without-a-terminal", ("fleet-init", "--interactive"), 2, ("ran out of answers", "nothing was set up"),
      "git fleet-add NAME --zone", where="plain"),
    C("init-outside-a-repository", ("fleet-init",), 2, ("not a git repository: {root}/outside",), "inside a git repository",
      where="outside", cwd="outside"),
    # add
    C("add-missing-zone", ("fleet-add", "api"), 2, ("Missing option '--zone'",), "git fleet-add -h"),
    C("add-existing-agent", ("fleet-add", "backend", "--zone", "lib/**"), 1, ("'backend' already exists",),
      "git fleet-rm backend", where="fleet1"),
    C("add-overlapping-zone", ("fleet-add", "api", "--zone", "src/backend/**"), 1,
      ("'api'", "'backend'", "both own 'src/backend/"), "--allow-overlap", where="fleet1"),
    C("add-unknown-base", ("fleet-add", "api", "--zone", "lib/**", "--base", "nosuchref"), 1, ("'nosuchref'",), "",
      where="fleet1"),
    C("add-malformed-config", ("fleet-add", "api", "--zone", "lib/**"), 2, ("{config}:3",), ".gitfleet.toml must be valid TOML",
      prepare=broken_config),
    C("add-from-an-agents-worktree", ("fleet-add", "api", "--zone", "lib/**"), 1, ("agent 'backend' cannot add agents",),
      "main worktree ({repo})", where="fleet1", cwd="repo-backend"),
    # rm
    # join
    C("join-unknown-agent", ("fleet-join", "ghost"), 2, ("no agent named 'ghost' in {config}",), "agents: backend",
      where="fleet1"),
    C("join-no-remote", ("fleet-join", "backend"), 2, ("this repository has no remote",), "--remote NAME", where="fleet1"),
    C("rm-unknown-agent", ("fleet-rm", "ghost"), 2, ("no agent named 'ghost' in {config}",), "agents: backend", where="fleet1"),
    C("rm-unmerged-commits", ("fleet-rm", "backend"), 1, ("fleet/backend has 1 commit(s)",), "--force", where="fleet1",
      prepare=backend_committed),
    C("rm-agent-of-a-checkpoint", ("fleet-rm", "web"), 1, ("'web'", "checkpoint 'phase-1'"), "[checkpoints.phase-1]",
      where="fleet2"),
    # list
    C("list-mistyped-config", ("fleet-list",), 2, ("{config}:", "'fleet.max_agents' must be int", "'ten'"), "fix .gitfleet.toml",
      prepare=mistyped_config),
    C("list-checkpoint-of-no-agent", ("fleet-list",), 2, ("{config}:", "'phase-9'", "'ghost'"), "agents: backend",
      where="fleet1", prepare=checkpoint_of_a_ghost),
    C("list-in-a-bare-repository", ("fleet-list",), 2, ("bare repository",), "--server", where="bare"),
    # who
    C("who-path-outside-the-repository", ("fleet-who", "/etc/passwd"), 2, ("'/etc/passwd'", "{repo}"), "inside the repository"),
    C("who-empty-path", ("fleet-who", ""), 2, ("an empty path names nothing",), "inside the repository"),
    # zones
    C("zones-not-a-fleet", ("fleet-zones",), 1, ("no fleet here", "{config}"), "git fleet-init", where="plain"),
    # merge
    C("merge-unknown-agent", ("fleet-merge", "ghost"), 2, ("no agent named 'ghost' in {config}",), "agents: backend",
      where="fleet1"),
    C("merge-unknown-checkpoint", ("fleet-merge", "--checkpoint", "phase-9"), 2, ("'phase-9'", "{config}"),
      "checkpoints: phase-1", where="fleet2"),
    C("merge-out-of-zone-commit", ("fleet-merge",), 1, ("backend", "README.md", "nothing was changed"), "git rebase -i",
      where="fleet1", prepare=out_of_zone_commit),
    C("merge-from-an-agents-worktree", ("fleet-merge",), 1, ("agent 'backend' cannot merge into the base",), "main worktree",
      where="fleet1", cwd="repo-backend"),
    # checkpoint
    C("checkpoint-add-missing-agent", ("fleet-checkpoint", "add", "phase-2"), 2, ("Missing option '--agent'",),
      "git fleet-checkpoint add -h"),
    C("checkpoint-add-unknown-agent", ("fleet-checkpoint", "add", "phase-2", "--agent", "ghost"), 2,
      ("no agent named 'ghost' in {config}",), "agents: backend", where="fleet1"),
    C("checkpoint-add-bad-timeout", ("fleet-checkpoint", "add", "phase-2", "--agent", "backend", "--timeout", "soon"), 2,
      ("'soon' is not a duration",), "30m", where="fleet1"),
    # status
    C("status-unknown-option", ("fleet-status", "--bogus"), 2, ("'--bogus'",), "git fleet-status -h"),
    C("status-outside-a-repository", ("fleet-status",), 2, ("not a git repository: {root}/outside",), "",
      where="outside", cwd="outside"),
    # watch
    C("watch-bad-notify", ("fleet-watch", "--notify", "loud"), 2, ("'loud' is not one of",), "git fleet-watch -h"),
    C("watch-once-and-json", ("fleet-watch", "--once", "--json"), 2, ("--once and --json",), "give one of them",
      where="fleet1"),
    C("watch-outside-a-repository", ("fleet-watch", "--once"), 2, ("not a git repository: {root}/outside",), "",
      where="outside", cwd="outside"),
    # sync
    C("sync-unknown-agent", ("fleet-sync", "ghost"), 2, ("no agent named 'ghost' in {config}",), "agents: backend",
      where="fleet1"),
    C("sync-uncommitted-work", ("fleet-sync", "backend"), 1, ("backend: not synced", "src/backend/api.py"),
      "commit the agent's work", where="fleet1", prepare=base_moved_and_backend_dirty),
    # set
    C("set-overlapping-zone", ("fleet-set", "backend", "--zone", "src/frontend/**"), 1, ("'web'", "src/frontend/app.js"),
      "--allow-overlap", where="fleet2"),
    C("set-unknown-placeholder", ("fleet-set", "backend", "--command", "run {nope}"), 2, ("{nope}", "'backend'"),
      "placeholders:", where="fleet1"),
    # run
    C("run-no-command", ("fleet-run", "backend"), 2, ("no command given",), "git fleet-run backend -- COMMAND", where="fleet1"),
    C("run-command-not-found", ("fleet-run", "backend", "nosuchprogram-xyz"), 1, ("nosuchprogram-xyz",), "PATH",
      where="fleet1"),
    C("run-from-an-agents-worktree", ("fleet-run", "backend", "true"), 1, ("agent 'backend' cannot run commands",),
      "main worktree", where="fleet1", cwd="repo-backend"),
    # up
    C("up-unknown-agent", ("fleet-up", "--detach", "ghost"), 2, ("no agent named 'ghost' in {config}",), "agents:"),
    C("up-bad-layout", ("fleet-up", "--layout", "grid"), 2, ("'--layout'", "'grid'"), "git fleet-up -h"),
    C("up-infinite-stagger", ("fleet-up", "--detach", "--stagger", "inf"), 2, ("'--stagger'",), "git fleet-up -h",
      where="fleet2"),
    C("up-stagger-not-a-number", ("fleet-up", "--detach", "--stagger", "nan"), 2, ("'--stagger'", "nan"), "git fleet-up -h",
      where="fleet2"),
    # ps, down, resume, attach
    C("ps-not-a-fleet", ("fleet-ps",), 1, ("no fleet here", "{config}"), "git fleet-init", where="plain"),
    C("down-from-an-agents-worktree", ("fleet-down",), 1, ("agent 'backend' cannot stop agents",), "main worktree",
      where="fleet1", cwd="repo-backend"),
    C("resume-unknown-agent", ("fleet-resume", "ghost"), 2, ("no agent named 'ghost' in {config}",), "agents:"),
    C("attach-unknown-agent", ("fleet-attach", "ghost"), 2, ("no agent named 'ghost' in {config}",), "agents:"),
    # task
    C("task-add-unknown-agent", ("fleet-task", "add", "First", "--agent", "ghost"), 2, ("no agent named 'ghost' in {config}",),
      "agents:"),
    C("task-add-unknown-dependency", ("fleet-task", "add", "First", "--depends", "99"), 2, ("task 99",), "git fleet-task list"),
    C("task-add-missing-body-file", ("fleet-task", "add", "First", "--body-file", "nosuch.md"), 2, ("nosuch.md",)),
    C("task-show-unknown-task", ("fleet-task", "show", "99"), 2, ("no task 99 in {repo}/tasks",), "git fleet-task list"),
    C("task-claim-who-is-working", ("fleet-task", "claim"), 2, ("not an agent's worktree",), "--agent NAME"),
    C("task-claim-nothing-to-claim", ("fleet-task", "claim"), 1, ("no task can be claimed by 'backend'",), "--wait",
      where="fleet1", cwd="repo-backend"),
    C("task-claim-bad-lease", ("fleet-task", "claim", "--agent", "backend", "--lease", "soon"), 2, ("'soon' is not a duration",),
      "30m", where="fleet1"),
    C("task-claim-unknown-agent", ("fleet-task", "claim", "--agent", "ghost"), 2, ("no agent named 'ghost' in {config}",),
      "agents:", prepare=a_task),
    C("task-renew-not-the-holder", ("fleet-task", "renew", "1", "--agent", "web"), 1, ("task-001", "'backend'", "'web'"),
      "git fleet-task claim", where="fleet2", prepare=a_task_claimed_by_backend),
    C("task-cancel-from-an-agents-worktree", ("fleet-task", "cancel", "1"), 1, ("agent 'backend' cannot cancel a task",),
      "git fleet-task release", where="fleet1", cwd="repo-backend", prepare=a_task),
    # plan
    C("plan-not-a-fleet", ("fleet-plan",), 1, ("no fleet here", "{config}"), "git fleet-init", where="plain"),
    # teleport
    C("teleport-push-unknown-remote", ("fleet-teleport", "push", "backend", "--remote", "nosuch"), 2, ("'nosuch'",),
      "known remotes", where="fleet1"),
    C("teleport-pull-unreachable-remote", ("fleet-teleport", "pull", "backend", "--remote", "{root}/nowhere"), 1,
      ("cannot reach remote '{root}/nowhere'",), "git ls-remote", where="fleet1"),
    C("teleport-list-unreachable-remote-says-why", ("fleet-teleport", "list", "--remote", "{root}/nowhere"), 1,
      ("'{root}/nowhere'", "does not appear to be a git repository"), "git ls-remote"),
    C("teleport-push-another-agent", ("fleet-teleport", "push", "backend"), 1, ("agent 'web' cannot teleport another agent",),
      "main worktree", where="fleet2", cwd="repo-web"),
    # doctor, prune
    C("doctor-fix-from-an-agents-worktree", ("fleet-doctor", "--fix"), 1, ("agent 'backend' cannot repair the fleet",),
      "main worktree", where="fleet1", cwd="repo-backend"),
    C("doctor-malformed-config", ("fleet-doctor",), 2, ("{config}:3",), "valid TOML", prepare=broken_config),
    C("prune-extra-argument", ("fleet-prune", "extra"), 2, ("(extra)",), "git fleet-prune -h"),
    C("prune-without-a-terminal", ("fleet-prune",), 1, ("would remove backend",), "--yes", where="fleet1",
      prepare=backend_committed_and_merged),
    # check: the hooks' entry point (not click)
    C("check-unknown-arguments", ("fleet-check", "--bogus"), 2, ("unknown arguments: --bogus",), "usage: git fleet-check"),
    C("check-commits-out-of-zone", ("fleet-check", "--commits", "backend"), 1, ("fleet/backend", "README.md"),
      "zone of 'backend'", where="fleet1", prepare=out_of_zone_commit),
    C("check-staged-out-of-zone", ("fleet-check",), 1, ("commit rejected", "'backend'", "docs/backend.md"),
      "git restore --staged", where="fleet1", cwd="repo-backend", prepare=staged_outside_the_zone),
    C("check-malformed-config", ("fleet-check",), 2, ("{config}:3",), "valid TOML", where="fleet1", cwd="repo-backend",
      prepare=staged_with_a_broken_config),
    C("check-outside-a-repository", ("fleet-check",), 2, ("not a git repository: {root}/outside",), "",
      where="outside", cwd="outside"),
]


def test_every_installed_command_has_a_case() -> None:
    covered = {c.script for c in CASES}
    assert set(SCRIPTS) - covered == set(), "commands in [project.scripts] with no bad-input case here"
    assert covered - set(SCRIPTS) == set(), "cases for commands that [project.scripts] does not install"
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"
    for c in CASES:  # named after their command, so that -k merge runs merge's
        assert c.id.startswith(("fleet" if c.args[0] == "fleet" else c.args[0].removeprefix("fleet-")) + "-"), c.id


def test_every_installed_command_is_where_git_finds_it() -> None:
    """The console scripts are installed beside the interpreter running the tests (PATH has it first)."""
    bindir = Path(sys.executable).parent
    missing = [s for s in SCRIPTS if not os.access(bindir / s, os.X_OK)]
    assert missing == [], f"not installed in {bindir}: {missing} (pip install -e . again)"


# -- running a case -------------------------------------------------------------------------------

def build(case: Case, request: pytest.FixtureRequest) -> Sandbox:
    """The sandbox a case runs in, made with the suite's fixtures as its `where` says."""
    sb: Sandbox
    if case.where in ("outside", "bare", "plain"):
        sb = request.getfixturevalue("sandbox")
        if case.where == "bare":
            sb.run(["git", "init", "-q", "--bare", str(sb.repo)], cwd=sb.root)
        elif case.where == "plain":
            sb.make_repo({"src/app.py": "app()\n", "docs/guide.md": "# guide\n", "README.md": "# project\n"})
    elif case.where in ("fleet", "fleet1"):
        sb = request.getfixturevalue("fleet_repo")
        if case.where == "fleet1":
            sb.add_agent("backend", "src/backend/**")
    elif case.where == "fleet2":
        sb = request.getfixturevalue("fleet2")
    else:
        raise AssertionError(f"unknown where: {case.where}")
    (sb.root / "outside").mkdir(exist_ok=True)
    return sb


def fill(text: str, values: dict[str, str]) -> str:
    """{root}, {repo} and {config} filled in; any other brace is the command's own ({nope})."""
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def snapshot(sb: Sandbox, cwd: Path) -> dict[str, object]:
    """What a refused or misused command must leave as it was."""
    # (the bus's directories, tasks/ and results/, are made by any command that opens it; a task
    # spec or result left behind shows in the status)
    here = sorted(set(os.listdir(cwd)) - {"tasks", "results"}) if cwd.is_dir() else None
    snap: dict[str, object] = {"root": sorted(os.listdir(sb.root)), "cwd": here}
    if (sb.repo / ".git").is_dir():
        snap["refs"] = sb.git("for-each-ref", "--format=%(refname) %(objectname)").out
        snap["status"] = sb.git("status", "--porcelain", "--untracked-files=all").out
        snap["worktrees"] = sb.git("worktree", "list", "--porcelain").out
        hooks = sb.repo / ".git/hooks"
        snap["hooks"] = sorted(p.name for p in hooks.iterdir() if not p.name.endswith(".sample")) if hooks.is_dir() else []
        cfg = sb.repo / ".gitfleet.toml"
        snap["config"] = cfg.read_bytes() if cfg.exists() else None
    elif sb.repo.is_dir():  # bare
        snap["refs"] = sb.git("for-each-ref", "--format=%(refname) %(objectname)").out
    return snap


def _param(case: Case) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input_through_the_installed_command(case: Case, request: pytest.FixtureRequest, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sb = build(case, request)
    # a tmux server of this test's own, should a command start one (it is ended below)
    monkeypatch.setenv("TMUX_TMPDIR", str(tmp_path / "tmux"))
    monkeypatch.delenv("TMUX", raising=False)
    (tmp_path / "tmux").mkdir()
    if case.prepare is not None:
        case.prepare(sb)
    values = {"root": str(sb.root), "repo": str(sb.repo), "config": str(sb.repo / ".gitfleet.toml")}
    cwd = sb.root / case.cwd
    before = snapshot(sb, cwd)
    argv = ["git", *(fill(a, values) for a in case.args)]
    try:
        # as git starts it: git finds git-fleet-NAME on PATH; no terminal on any of its streams
        proc = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    finally:
        if any((tmp_path / "tmux").iterdir()):
            subprocess.run(["tmux", "kill-server"], capture_output=True)
    said = f"$ {' '.join(argv)}  (in {cwd})\nexit {proc.returncode}\n--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
    assert "Traceback" not in proc.stdout + proc.stderr, said
    assert proc.returncode == case.code, said
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    hints = [line for line in proc.stderr.splitlines() if line.startswith("hint: ")]
    assert errors, f"no 'error:' line\n{said}"
    assert "\x1b[" not in proc.stdout + proc.stderr, f"colour without a terminal\n{said}"
    for name in case.names:
        wanted = fill(name, values)
        assert any(wanted in line for line in errors), f"the error does not say {wanted!r}\n{said}"
    if case.hint is not None:
        wanted = fill(case.hint, values)
        assert any(wanted in line for line in hints), f"no hint saying {wanted!r}\n{said}"
    assert snapshot(sb, cwd) == before, f"the command changed something\n{said}"
