"""Durable writes (git_fleet/durable.py). Killing a process cannot test them: its writes survive
in the page cache either way. So the order of operations is tested instead, on a real file
system: each primitive's calls recorded as it makes them (the file fsynced before its rename or
link, the directory after), and, for every state file the fleet writes, that the real command
wrote it through a primitive and through nothing else."""

from __future__ import annotations

import builtins
import errno
import fcntl
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from git_fleet import durable
from git_fleet.cli import completion
from helpers import Sandbox

DURABLE = durable.__file__
WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


class Recorder:
    """os.fsync, os.rename, os.replace, os.link and os.open wrapped (and open(), for writes made
    without them), each calling the real one: the calls in order, which paths a primitive of
    durable.py wrote (its outermost function there: replace, create, create_held, append_line),
    and which were written some other way."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.calls: list[tuple[str, str]] = []  # (call, path): fsync of the file or directory named
        self.by: dict[str, set[str]] = {}  # real path -> the primitives that wrote it
        self.raw: set[str] = set()  # real paths written by anything else
        for name in ("fsync", "rename", "replace", "link", "symlink", "open"):
            monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name)))
        real_open = builtins.open

        def opened(file: Any, mode: str = "r", *args: Any, **kw: Any) -> Any:
            if isinstance(file, (str, os.PathLike)) and set(mode) & set("wax+"):
                self.raw.add(_key(file))
            return real_open(file, mode, *args, **kw)

        monkeypatch.setattr(builtins, "open", opened)
        monkeypatch.setattr(io, "open", opened)  # (what pathlib's write_text and open call)

    def _wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kw: Any) -> Any:
            if name == "fsync":
                self.calls.append(("fsync", _named(args[0])))
            elif name == "open":
                if args[1] & WRITING:
                    self.calls.append(("open", os.fspath(args[0])))
                    self._wrote(os.fspath(args[0]), bool(args[1] & os.O_APPEND))
            else:
                self.calls.append((name, os.fspath(args[1])))
                self._wrote(os.fspath(args[1]), True)
            return real(*args, **kw)

        return call

    def _wrote(self, path: str, final: bool) -> None:
        """`path` written; by a primitive when made from durable.py (a temporary file it opens is
        not the file it writes: that is named by its rename or link)."""
        primitive = _primitive()
        if primitive is None:
            self.raw.add(_key(path))
        elif final:
            self.by.setdefault(_key(path), set()).add(primitive)

    def wrote(self, path: Path) -> set[str]:
        return self.by.get(_key(path), set())


def _key(path: str | Path) -> str:
    """The path with its directory's links resolved, not its own name's (a symlink is itself)."""
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def _named(fd: int) -> str:
    """The path of the file or directory open as `fd` (Linux's /proc)."""
    return os.readlink(f"/proc/self/fd/{fd}")


def _primitive() -> str | None:
    """The durable.py function outermost in the calls that led here, if any."""
    frame, found = sys._getframe(3), None
    while frame is not None:
        if frame.f_code.co_filename == DURABLE:
            found = frame.f_code.co_name
        elif found is not None:
            break
        frame = frame.f_back
    return found


@pytest.fixture
def rec(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    return Recorder(monkeypatch)


def temporary_files(where: Path) -> list[str]:
    return sorted(p.name for p in where.iterdir() if p.name.endswith(".tmp"))


# -- (a) the order of each primitive's calls -------------------------------------------------------

def ordered(calls: list[tuple[str, str]], *expected: tuple[str, str]) -> None:
    """`expected` are among `calls` in this order (other calls may come between)."""
    at = 0
    for want in expected:
        assert want in calls[at:], f"{want} not after {expected[:expected.index(want)]} in {calls}"
        at = calls.index(want, at) + 1


def temp_of(calls: list[tuple[str, str]], path: Path) -> str:
    """The temporary file the primitive wrote `path` through: hidden, beside it; or, made with no
    name (O_TMPFILE, in `path`'s directory), as /proc names it until it is linked."""
    unnamed = [p for call, p in calls if call == "fsync" and p.startswith(f"{path.parent}/#") and p.endswith(" (deleted)")]
    if unnamed:
        assert len(unnamed) == 1 and ("open", str(path.parent)) in calls, calls
        return unnamed[0]
    opened = [p for call, p in calls if call == "open" and os.path.basename(p).startswith(f".{path.name}.")]
    assert len(opened) == 1, calls
    assert os.path.dirname(opened[0]) == str(path.parent) and opened[0].endswith(".tmp")
    return opened[0]


def test_replace_fsyncs_the_file_before_the_rename_and_the_directory_after(tmp_path: Path, rec: Recorder) -> None:
    path = tmp_path / "state.json"
    durable.replace(path, '{"a": 1}')
    tmp = temp_of(rec.calls, path)
    ordered(rec.calls, ("open", tmp), ("fsync", tmp), ("replace", str(path)), ("fsync", str(tmp_path)))
    assert path.read_text() == '{"a": 1}' and temporary_files(tmp_path) == []
    rec.calls.clear()
    durable.replace(path, b"\x00\xff")  # again, over it; bytes as they are
    ordered(rec.calls, ("fsync", temp_of(rec.calls, path)), ("replace", str(path)), ("fsync", str(tmp_path)))
    assert path.read_bytes() == b"\x00\xff" and rec.wrote(path) == {"replace"}


def test_replace_keeps_the_mode_gives_a_new_file_0644_and_a_hook_the_mode_given(tmp_path: Path) -> None:
    umask = os.umask(0o077)  # whatever the umask
    try:
        new, kept, hook = tmp_path / "new", tmp_path / "kept", tmp_path / "pre-commit"
        durable.replace(new, "x")
        kept.write_text("x")
        kept.chmod(0o640)
        durable.replace(kept, "y")
        durable.replace(hook, "#!/bin/sh\n", mode=0o755)
        durable.replace(hook, "#!/bin/sh\nexit 0\n", mode=0o755)
    finally:
        os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o7777 for p in (new, kept, hook)}
    assert modes == {"new": 0o644, "kept": 0o640, "pre-commit": 0o755}
    assert kept.read_text() == "y" and hook.read_text() == "#!/bin/sh\nexit 0\n"


def test_create_links_a_complete_file_once_and_leaves_a_taken_name_alone(tmp_path: Path, rec: Recorder) -> None:
    path = tmp_path / "task-001.claim-1"
    assert durable.create(path, "mine\n") is True
    tmp = temp_of(rec.calls, path)
    opened = str(tmp_path) if tmp.endswith(" (deleted)") else tmp  # (a file with no name: its directory opened)
    ordered(rec.calls, ("open", opened), ("fsync", tmp), ("link", str(path)), ("fsync", str(tmp_path)))
    assert not [c for c in rec.calls if c[0] in ("rename", "replace")]  # never a rename: it would overwrite
    assert (path.read_text(), path.stat().st_mode & 0o777, temporary_files(tmp_path)) == ("mine\n", 0o644, [])
    before = path.stat()
    assert durable.create(path, "theirs\n") is False
    after = path.stat()
    assert path.read_text() == "mine\n" and (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert temporary_files(tmp_path) == []


def test_create_held_holds_its_lock_from_before_the_file_appears(tmp_path: Path, rec: Recorder) -> None:
    path = tmp_path / "task-001.claim-1"
    fd = durable.create_held(path, '{"removed": true}')
    assert fd is not None
    try:
        ordered(rec.calls, ("fsync", temp_of(rec.calls, path)), ("link", str(path)), ("fsync", str(tmp_path)))
        other = os.open(path, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
        assert durable.create_held(path, "{}") is None
        assert path.read_text() == '{"removed": true}' and temporary_files(tmp_path) == []
    finally:
        os.close(fd)


def test_append_line_fsyncs_the_file_and_a_new_files_directory(tmp_path: Path, rec: Recorder) -> None:
    log = tmp_path / "checkpoints.log"
    durable.append_line(log, "one")
    ordered(rec.calls, ("open", str(log)), ("fsync", str(log)), ("fsync", str(tmp_path)))
    rec.calls.clear()
    durable.append_line(log, "two\n")
    ordered(rec.calls, ("open", str(log)), ("fsync", str(log)))
    assert ("fsync", str(tmp_path)) not in rec.calls  # the name was there already
    assert log.read_text() == "one\ntwo\n" and log.stat().st_mode & 0o777 == 0o644
    assert rec.wrote(log) == {"append_line"} and not temporary_files(tmp_path)


@pytest.mark.parametrize("fails", ["write", "fsync"])
@pytest.mark.parametrize("primitive", ["replace", "create"])
def test_a_failing_write_leaves_no_temporary_file_and_the_old_file_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, primitive: str, fails: str) -> None:
    path = tmp_path / "approved.toml"
    path.write_text("old\n")
    real = getattr(os, fails)

    def failing(fd: int, *args: Any) -> Any:
        if not os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC if fails == "write" else errno.EIO, os.strerror(errno.EIO))
        return real(fd, *args)

    with monkeypatch.context() as patched, pytest.raises(OSError):
        patched.setattr(os, fails, failing)
        getattr(durable, primitive)(tmp_path / ("approved.toml" if primitive == "replace" else "new"), "new\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["approved.toml"] and path.read_text() == "old\n"


# -- (b) every state file the fleet writes, through a primitive ------------------------------------

@dataclass
class Case:
    """A state file: the fixture to start from, what to do (the real commands), the file (from
    the sandbox) and the primitive that must have written it."""
    fixture: str
    act: Callable[[Sandbox], None]
    path: Callable[[Sandbox], Path]
    primitive: str = "replace"
    then: Callable[[Sandbox], None] | None = None  # a further check of what was written


def init_here(sb: Sandbox) -> None:
    sb.fleet("init")


def fresh(sb: Sandbox) -> None:
    sb.make_repo({"README.md": "# project\n", "src/a.py": "a\n"})


def add_web(sb: Sandbox) -> None:
    sb.add_agent("web", "src/frontend/**")


def bus(*steps: tuple[str, ...]) -> Callable[[Sandbox], None]:
    def act(sb: Sandbox) -> None:
        if any("--agent" in step for step in steps):
            add_web(sb)  # (a task is claimed for an agent the fleet has)
        for step in steps:
            sb.fleet("task", *step)
    return act


def hook_is_executable(sb: Sandbox) -> None:
    assert (sb.repo / ".git/hooks/pre-commit").stat().st_mode & 0o777 == 0o755


def merge_union(sb: Sandbox) -> None:
    sb.commit(sb.repo, {"CHANGELOG.md": "# Changes\n"}, "changelog")
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace("union = []", 'union = ["CHANGELOG.md"]'))
    sb.fleet("zones", "--approve")
    sb.fleet("merge", "--dry-run")


def separate_git_dir(sb: Sandbox) -> None:
    sb.run(["git", "init", "-q", "--separate-git-dir", str(sb.root / "repo.git"), str(sb.repo)], cwd=sb.root)
    sb.commit(sb.repo, {"README.md": "# project\n"}, "first")
    sb.fleet("init")


def server_with_a_key(sb: Sandbox) -> None:
    server = sb.root / "server.git"
    sb.run(["git", "init", "-q", "--bare", str(server)], cwd=sb.root)
    key = sb.root / "orchestrator.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHc4Z2hpZmVzaGlmZXNoaWZlc2hpZmVzaGlmZXNo orchestrator\n")
    sb.fleet("init", "--server", "--orchestrator-key", str(key), cwd=server)


def install_completion(sb: Sandbox) -> None:
    assert completion.main(["install", str(sb.root / "prefix")]) == 0


def up_in_tmux(sb: Sandbox) -> None:
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace('command = "claude --session-id {session_id} --name {session} --model {model}"',
                                           'command = "exec sleep 600"'))
    sb.add_agent("web", "src/frontend/**")
    sb.monkeypatch.setenv("TMUX_TMPDIR", str(sb.root))
    sb.monkeypatch.delenv("TMUX", raising=False)
    sb.fleet("up", "--detach", "--stagger", "0")


def state(sb: Sandbox, name: str) -> Path:
    return sb.repo / "tasks/.state" / name


CASES = {
    "zones cache": Case("fresh", init_here, lambda sb: sb.repo / ".git/fleet/zones.cache"),
    "hook": Case("fresh", init_here, lambda sb: sb.repo / ".git/hooks/pre-commit", then=hook_is_executable),
    "config (init)": Case("fresh", init_here, lambda sb: sb.repo / ".gitfleet.toml"),
    "approval record": Case("fresh", init_here, lambda sb: sb.repo / ".git/fleet/approved.toml"),
    "approval of the next write": Case("fresh", init_here, lambda sb: sb.repo / ".git/fleet/approved-next.toml"),
    "config edited (config_edit)": Case("fleet_repo", add_web, lambda sb: sb.repo / ".gitfleet.toml"),
    "add's intent record": Case("fleet_repo", add_web, lambda sb: sb.repo / ".git/fleet/adding"),
    "brief.md": Case("fleet_repo", add_web, lambda sb: sb.root / "repo-web/.fleet/brief.md"),
    "main worktree record": Case("sandbox", separate_git_dir, lambda sb: sb.root / "repo.git/fleet/main-worktree"),
    "task spec": Case("fleet_repo", bus(("add", "one")), lambda sb: sb.repo / "tasks/task-001-one.md", "create"),
    "task id": Case("fleet_repo", bus(("add", "one")), lambda sb: state(sb, "id-1"), "create"),
    "last task id": Case("fleet_repo", bus(("add", "one")), lambda sb: state(sb, "last-id")),
    "claim state's .gitignore": Case("fleet_repo", bus(("add", "one")), lambda sb: state(sb, ".gitignore"), "create"),
    "claim": Case("fleet_repo", bus(("add", "one"), ("claim", "--agent", "web")),
                  lambda sb: state(sb, "agents/web/task-001.claim-1"), "create"),
    "claim's public link": Case("fleet_repo", bus(("add", "one"), ("claim", "--agent", "web")),
                                lambda sb: state(sb, "task-001.claim-1"), "symlink"),
    "renewed claim": Case("fleet_repo", bus(("add", "one"), ("claim", "--agent", "web"), ("renew", "1", "--agent", "web")),
                          lambda sb: state(sb, "agents/web/task-001.claim-1.lease-1"), "replace"),
    "result": Case("fleet_repo", bus(("add", "one"), ("claim", "--agent", "web"), ("done", "1", "--agent", "web")),
                   lambda sb: sb.repo / "results/agents/web/task-001-result.md", "create"),
    "result's public link": Case("fleet_repo", bus(("add", "one"), ("claim", "--agent", "web"), ("done", "1", "--agent", "web")),
                                 lambda sb: sb.repo / "results/task-001-result.md", "symlink"),
    "rm's claim": Case("fleet_repo", bus(("add", "one"), ("rm", "1")), lambda sb: state(sb, "task-001.claim-1"),
                       "create_held"),
    "rm's result": Case("fleet_repo", bus(("add", "one"), ("rm", "1")), lambda sb: sb.repo / "results/task-001-result.md",
                        "create"),
    "master_plan.md": Case("fleet_repo", lambda sb: sb.fleet("plan"), lambda sb: sb.repo / "master_plan.md"),
    "move journal": Case("fleet2", lambda sb: sb.fleet("merge", "--checkpoint", "phase-1"),
                         lambda sb: sb.repo / ".git/fleet/move-journal"),
    "ref context": Case("fleet2", lambda sb: sb.fleet("merge", "--checkpoint", "phase-1"),
                        lambda sb: sb.repo / ".git/fleet/ref-context/HEAD"),
    "checkpoint log": Case("fleet2", lambda sb: sb.fleet("merge", "--checkpoint", "phase-1"),
                           lambda sb: sb.repo / ".git/fleet/checkpoints.log", "append_line"),
    "union merge attributes": Case("fleet2", merge_union, lambda sb: sb.repo / ".git/fleet/merge-attributes"),
    "server's signers": Case("sandbox", server_with_a_key, lambda sb: sb.root / "server.git/fleet/signers"),
    "server's hook": Case("sandbox", server_with_a_key, lambda sb: sb.root / "server.git/hooks/pre-receive"),
    "completion script": Case("sandbox", install_completion,
                              lambda sb: sb.root / "prefix/share/zsh/site-functions/_git-fleet-add"),
    "completion manifest": Case("sandbox", install_completion,
                                lambda sb: sb.root / "prefix/share/git-fleet/completion-files"),
    "session state": Case("fleet_repo", up_in_tmux, lambda sb: sb.repo / ".git/fleet/sessions.json"),
}


@pytest.fixture
def started(request: pytest.FixtureRequest, sandbox: Sandbox) -> Iterator[Sandbox]:
    case = CASES[request.param]
    if case.fixture == "fresh":
        fresh(sandbox)
        yield sandbox
    elif case.fixture == "sandbox":
        yield sandbox
    else:
        yield request.getfixturevalue(case.fixture)
    if case.act is up_in_tmux:
        subprocess.run(["tmux", "kill-server"], capture_output=True)


@pytest.mark.parametrize("started", [
    pytest.param(name, id=name, marks=[pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]
                 if CASES[name].act is up_in_tmux else [])
    for name in CASES], indirect=True)
def test_each_state_file_is_written_through_a_primitive(started: Sandbox, request: pytest.FixtureRequest,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES[request.node.callspec.params["started"]]
    sb = started
    rec = Recorder(monkeypatch)
    case.act(sb)
    path = case.path(sb)
    assert case.primitive in rec.wrote(path), f"{path} was written by {sorted(rec.wrote(path)) or 'no primitive'}"
    assert _key(path) not in rec.raw, f"{path} was also written directly"
    if case.then is not None:
        case.then(sb)


def test_the_recorder_sees_a_write_made_without_a_primitive(tmp_path: Path, rec: Recorder) -> None:
    """(what the test above relies on to say `not through a primitive`)"""
    (tmp_path / "a").write_text("x")
    with open(tmp_path / "b", "w") as fh:
        fh.write("x")
    os.replace(tmp_path / "b", tmp_path / "c")
    assert {os.path.basename(p) for p in rec.raw} == {"a", "b", "c"} and rec.by == {}
