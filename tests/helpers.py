"""Builders that run real git, so tests read like the user's story."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from git_fleet.cli.commands import ALL


def _adopt_orphans() -> None:
    """Make this process the subreaper of what it starts: a killed program's children, orphaned,
    come to it rather than to init, which here reaps them up to two seconds late (and a zombie
    still counts as a member of its process group)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # not Linux: init reaps them, later
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _reap_group(group: int) -> None:
    """Reap the zombies of process group `group` that are this process's (adopted) children."""
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == b"Z" and int(fields[1]) == os.getpid() and int(fields[2]) == group:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(entry.name), os.WNOHANG)


@dataclass
class Result:
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


class Sandbox:
    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch):
        self.root = root
        self.repo = root / "repo"
        self.monkeypatch = monkeypatch

    # -- running things -------------------------------------------------------------------------

    def run(self, args: list[str], cwd: Path | None = None, *, ok: bool | None = True, input: str | None = None,
            env: Mapping[str, str] | None = None) -> Result:
        """Run a real program. ok=True: it must succeed; ok=False: it must fail; None: either."""
        proc = subprocess.run(args, cwd=cwd or self.repo, input=input, capture_output=True, text=True,
                              env={**os.environ, **(env or {})})
        res = Result(proc.returncode, proc.stdout, proc.stderr)
        if ok is True:
            assert proc.returncode == 0, f"{' '.join(args)} failed:\n{res}"
        elif ok is False:
            assert proc.returncode != 0, f"{' '.join(args)} should have failed:\n{res}"
        return res

    def spawn(self, args: list[str], cwd: Path | None = None, env: Mapping[str, str] | None = None,
              **kw: Any) -> subprocess.Popen[str]:
        """Start a real program in a session (and process group) of its own, so that a test can
        end it with everything it started: kill_group."""
        _adopt_orphans()
        return subprocess.Popen(args, cwd=cwd or self.repo, env={**os.environ, **(env or {})}, text=True,
                                start_new_session=True, **kw)

    def run_group(self, args: list[str], cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 120,
                  said: Callable[[], str] = str) -> Result:
        """Run a real program (an agent CLI) to its end in a process group of its own, then end
        whatever it started that stayed in the group (its hooks, its shells); a program that does
        not end within `timeout` fails the test, with what `said()` then says added to its output."""
        proc = self.spawn(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_group(proc)
            out, err = proc.communicate()
            pytest.fail(f"{args[0]} did not end within {timeout} s\n--- stdout\n{out}\n--- stderr\n{err}\n{said()}")
        finally:
            self.kill_group(proc)
        return Result(proc.returncode, out, err)

    def paused(self, args: list[str], point: str, env: Mapping[str, str] | None = None,
               **kw: Any) -> tuple[subprocess.Popen[str], Path]:
        """A real command stopped at a named point (see git_fleet/pause.py), to kill it there or let
        it go on: the process, and the marker file it made on getting there."""
        marker = self.root / f"paused-at-{point}"
        proc = self.spawn(args, env={"GIT_FLEET_TEST_PAUSE": point, "GIT_FLEET_TEST_MARKER": str(marker), **(env or {})},
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
        deadline = time.time() + 60
        while not marker.exists():
            assert proc.poll() is None, f"{' '.join(args)} ended before {point}: {proc.communicate()}"
            assert time.time() < deadline, f"{' '.join(args)} never reached {point}"
            time.sleep(0.02)
        return proc, marker

    @staticmethod
    def kill_group(proc: subprocess.Popen[str], sig: int = signal.SIGKILL) -> int:
        """Send `sig` to the process group of `proc` (the program and every process it started
        that stayed in its group), then reap it; returns its exit status."""
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        code = proc.wait()
        if sig == signal.SIGKILL:  # the rest of the group dies as well, a moment later: wait for it
            deadline = time.time() + 10
            while time.time() < deadline:
                try:
                    os.killpg(proc.pid, 0)
                except ProcessLookupError:
                    break
                _reap_group(proc.pid)
                time.sleep(0.01)
        return code

    def git(self, *args: str, cwd: Path | None = None, ok: bool | None = True, input: str | None = None,
            env: Mapping[str, str] | None = None) -> Result:
        return self.run(["git", *args], cwd, ok=ok, input=input, env=env)

    def fleet(self, command: str, *args: str, cwd: Path | None = None, ok: bool | None = True) -> Result:
        """A git fleet-* command, in process through click (the fast level of tests)."""
        old = os.getcwd()
        os.chdir(cwd or self.repo)
        try:
            res = CliRunner().invoke(ALL[command], list(args), prog_name=f"git fleet-{command}")
        finally:
            os.chdir(old)
        result = Result(res.exit_code, res.stdout, res.stderr)
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            raise res.exception
        if ok is True:
            assert res.exit_code == 0, f"fleet-{command} {' '.join(args)} failed:\n{result}"
        elif ok is False:
            assert res.exit_code != 0, f"fleet-{command} {' '.join(args)} should have failed:\n{result}"
        assert "Traceback" not in res.stderr + res.stdout
        return result

    # -- building repositories --------------------------------------------------------------------

    def make_repo(self, files: Mapping[str, str | bytes], path: Path | None = None) -> Path:
        repo = path or self.repo
        self.run(["git", "init", "-q", str(repo)], cwd=self.root)
        self.write_files(files, repo)
        self.git("add", "-A", cwd=repo)
        self.git("commit", "-q", "-m", "initial", cwd=repo)
        if path is None:
            self.monkeypatch.chdir(repo)
        return repo

    def write_files(self, files: Mapping[str, str | bytes], where: Path | None = None) -> None:
        for name, content in files.items():
            p = (where or self.repo) / name
            p.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                p.write_bytes(content)
            else:
                p.write_text(content, encoding="utf-8")

    def commit(self, where: Path, files: Mapping[str, str | bytes], message: str = "change", *,
               ok: bool | None = True, extra: tuple[str, ...] = ()) -> Result:
        """Write files, stage them and commit in `where`; returns the commit's result."""
        self.write_files(files, where)
        self.git("add", "-A", "--", *files, cwd=where)
        return self.git("commit", "-q", "-m", message, *extra, cwd=where, ok=ok)

    def add_agent(self, name: str, *zones: str, extra: tuple[str, ...] = ()) -> Path:
        args = [name]
        for z in zones:
            args += ["--zone", z]
        self.fleet("add", *args, *extra)
        return self.root / f"repo-{name}"

    def head(self, ref: str = "HEAD", cwd: Path | None = None) -> str:
        return self.git("rev-parse", ref, cwd=cwd).out.strip()

    def branches(self) -> list[str]:
        return self.git("for-each-ref", "--format=%(refname:short)", "refs/heads").out.split()


def repo_state(sb: Sandbox) -> dict[str, object]:
    """Everything a failed merge must leave as it was in the main worktree's repository."""
    git_dir = sb.repo / ".git"
    return {
        "refs": sb.git("for-each-ref", "--format=%(refname) %(objectname)").out,
        "status": sb.git("status", "--porcelain=v2", "--untracked-files=all").out,
        "index": (git_dir / "index").read_bytes(),
        "merge_head": (git_dir / "MERGE_HEAD").exists(),
        "locks": sorted(str(p) for p in git_dir.rglob("*.lock")),
        "journal": (git_dir / "fleet/move-journal").exists(),
    }


@contextlib.contextmanager
def git_daemon(sb: Sandbox, root: Path, port: int | None = None) -> Iterator[str]:
    """A real git daemon on 127.0.0.1 serving the repositories under `root`, pushes allowed; yields
    its base URL (git://127.0.0.1:PORT). `port`: that one (a daemon started again), else a free one."""
    if port is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    proc = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack",
                             f"--base-path={root}", "--listen=127.0.0.1", f"--port={port}", str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    url = f"git://127.0.0.1:{port}"
    try:
        deadline = time.time() + 10
        while sb.git("ls-remote", f"{url}/{next(root.glob('*.git')).name}", ok=None).code != 0:
            assert proc.poll() is None and time.time() < deadline, "git daemon did not start"
            time.sleep(0.1)
        yield url
    finally:
        Sandbox.kill_group(proc, signal.SIGTERM)  # (git daemon and the children it serves with)


def private_tmux(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private tmux server's place for the test (TMUX_TMPDIR, outside any tmux); skipped
    where tmux is not installed. The test ends its server (tmux kill-server)."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (.ci/run installs it)")
    sockets = tmp_path / "tmux"
    sockets.mkdir()
    monkeypatch.setenv("TMUX_TMPDIR", str(sockets))
    monkeypatch.delenv("TMUX", raising=False)
    return sockets
