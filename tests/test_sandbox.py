"""The sandbox runner (git_fleet/sandbox_run.py) under the real kernel: Landlock and a user and
mount namespace, no mocks. Each route is tried by a sandboxed process, and the test asserts that
what it aimed at is unchanged and that the process saw an error, with the same route shown to
work unsandboxed in the same test (so that it cannot pass because the attempt never ran).
Skipped, with the reason, where the kernel lacks what the sandbox needs."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from git_fleet import sandbox

MISSING = sandbox.support().missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"no sandbox on this system: {MISSING}")


def run(argv: list[str], write: list[Path], *, sandboxed: bool = True, ports: tuple[int, ...] = (),
        env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env or {})}
    # (what it may see in /tmp, which is its own else: the test's directory, which holds what it aims at)
    keep = [str(w.parent) for w in write]
    line = sandbox.command(argv, [str(w) for w in write], list(ports), env, keep=keep) if sandboxed else argv
    return subprocess.run(line, capture_output=True, text=True, env=env, cwd=cwd, timeout=60)


@pytest.fixture
def place(tmp_path: Path) -> tuple[Path, Path]:
    """A directory the sandboxed process may write (its worktree, say), and one beside it that it may not."""
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    (outside / "theirs.txt").write_text("theirs\n")
    return inside, outside


def test_writes_stay_beneath_the_directories_given(place: tuple[Path, Path]) -> None:
    inside, outside = place
    target = outside / "theirs.txt"
    write = ["sh", "-c", f"echo mine > {target}"]
    res = run(write, [inside])
    assert res.returncode != 0 and target.read_text() == "theirs\n"
    assert "Read-only file system" in res.stderr or "Permission denied" in res.stderr, res.stderr
    assert run(["sh", "-c", f"echo ok > {inside / 'a'}"], [inside]).returncode == 0
    assert (inside / "a").read_text() == "ok\n"
    assert run(write, [inside], sandboxed=False).returncode == 0 and target.read_text() == "mine\n"


@pytest.mark.parametrize("route", ["rename out", "rename in", "hard link in", "symlink out", "truncate", "delete",
                                   "chmod", "utimes", "xattr"])
def test_no_route_around_the_boundary(place: tuple[Path, Path], route: str) -> None:
    inside, outside = place
    (inside / "mine.txt").write_text("mine\n")
    target = outside / "theirs.txt"
    script = {
        "rename out": f"mv {inside / 'mine.txt'} {outside / 'moved.txt'}",
        "rename in": f"mv {target} {inside / 'taken.txt'}",
        "hard link in": f"ln {target} {inside / 'link'} && echo changed > {inside / 'link'}",
        "symlink out": f"ln -s {target} {inside / 'sym'} && echo changed > {inside / 'sym'}",
        "truncate": f"truncate -s 0 {target}",
        "delete": f"rm {target}",
        # what Landlock does not mediate: refused by the read-only view of everything else
        "chmod": f"chmod 000 {target}",
        "utimes": f"touch -d 2001-01-01 {target}",
        "xattr": f"{sys.executable} -c \"import os; os.setxattr('{target}', 'user.fleet', b'x')\"",
    }[route]
    before = os.stat(target)
    res = run(["sh", "-c", script], [inside])
    assert res.returncode != 0, res
    assert target.read_text() == "theirs\n" and not (outside / "moved.txt").exists()
    after = os.stat(target)
    assert (after.st_mode, after.st_mtime_ns) == (before.st_mode, before.st_mtime_ns) and not os.listxattr(target)
    assert (inside / "mine.txt").read_text() == "mine\n"
    shutil.rmtree(inside)
    inside.mkdir()
    (inside / "mine.txt").write_text("mine\n")
    assert run(["sh", "-c", script], [inside], sandboxed=False).returncode == 0  # (the route itself works)


@pytest.fixture
def tmux_server(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The person's tmux server, started outside the sandbox on a private TMUX_TMPDIR."""
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.skip("tmux is not installed (.ci/run installs it)")
    env = {"TMUX_TMPDIR": str(tmp_path / "tmuxdir")}
    (tmp_path / "tmuxdir").mkdir()
    subprocess.run([tmux, "new-session", "-d", "-s", "person", "sleep 600"], env={**os.environ, **env}, check=True)
    socket_path = str(tmp_path / "tmuxdir" / f"tmux-{os.getuid()}" / "default")
    try:
        yield {**env, "TMUX": f"{socket_path},1,0"}
    finally:
        subprocess.run([tmux, "kill-server"], env={**os.environ, **env}, capture_output=True)


def test_the_persons_tmux_server_does_no_write_for_the_sandbox(place: tuple[Path, Path],
                                                               tmux_server: dict[str, str]) -> None:
    """Measured before the masks: a process confined by Landlock alone had tmux write the file."""
    inside, outside = place
    made = outside / "made-by-tmux"
    socket_path = tmux_server["TMUX"].split(",")[0]
    for argv in (["tmux", "new-window", "-d", f"touch {made}"],  # $TMUX (cleared) or TMUX_TMPDIR (masked)
                 ["tmux", "-S", socket_path, "new-window", "-d", f"touch {made}"]):  # the socket by its path
        res = run(argv, [inside], env=tmux_server)
        assert res.returncode != 0, res
        time.sleep(0.3)
        assert not made.exists()
    assert run(["tmux", "-S", socket_path, "new-window", "-d", f"touch {made}"], [inside], sandboxed=False,
               env=tmux_server).returncode == 0
    deadline = time.monotonic() + 5
    while not made.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert made.exists()


def test_loopback_services_are_closed_but_the_ports_allowed(place: tuple[Path, Path]) -> None:
    inside, _ = place
    servers = []
    for _ in range(2):
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen()
        servers.append(server)
    closed, allowed = (s.getsockname()[1] for s in servers)
    try:
        probe = ("import socket, sys\ns = socket.socket()\n"
                 "try:\n    s.connect(('127.0.0.1', int(sys.argv[1])))\nexcept OSError as e:\n"
                 "    print(e); sys.exit(1)\n")
        res = run([sys.executable, "-c", probe, str(closed)], [inside], ports=(allowed,))
        assert res.returncode == 1 and "Permission denied" in res.stdout, res
        assert run([sys.executable, "-c", probe, str(allowed)], [inside], ports=(allowed,)).returncode == 0
        assert run([sys.executable, "-c", probe, str(closed)], [inside], sandboxed=False).returncode == 0
    finally:
        for s in servers:
            s.close()


def test_no_signal_reaches_a_process_outside(place: tuple[Path, Path]) -> None:
    inside, _ = place
    outside_proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        res = run(["kill", "-TERM", str(outside_proc.pid)], [inside])
        assert res.returncode != 0
        time.sleep(0.2)
        assert outside_proc.poll() is None  # still running
        assert run(["kill", "-TERM", str(outside_proc.pid)], [inside], sandboxed=False).returncode == 0
        assert outside_proc.wait(timeout=10) == -signal.SIGTERM
    finally:
        if outside_proc.poll() is None:
            os.killpg(outside_proc.pid, signal.SIGKILL)
            outside_proc.wait()


def test_the_agent_clis_settings_in_home_stay_as_they_are(place: tuple[Path, Path], tmp_path: Path) -> None:
    inside, _ = place
    settings = tmp_path / "home" / ".claude" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text("{}\n")
    hooks_off = ["sh", "-c", f"echo '{{\"disableAllHooks\": true}}' > {settings}"]
    assert run(hooks_off, [inside]).returncode != 0 and settings.read_text() == "{}\n"
    assert run(hooks_off, [inside], sandboxed=False).returncode == 0


def test_a_process_left_behind_stays_in_the_sandbox(place: tuple[Path, Path]) -> None:
    """The command exits at once; what it started in the background tries later, and fails."""
    inside, outside = place
    late = outside / "late"
    script = f"(sleep 0.5; echo late > {late}; echo tried > {inside / 'tried'}) >/dev/null 2>&1 & echo started"
    res = run(["sh", "-c", script], [inside])
    assert res.returncode == 0 and res.stdout == "started\n"
    deadline = time.monotonic() + 10
    while not (inside / "tried").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (inside / "tried").exists() and not late.exists()


def test_a_commit_in_its_own_worktree_works_and_the_repository_s_config_and_hooks_do_not_move(
        tmp_path: Path) -> None:
    """The write set a commit on a linked worktree's branch needs (measured with strace): the
    worktree, the objects, the worktree's git dir, and its branch's ref and reflog directories.
    (Another branch in the same ref directory, and existing objects, are the layout's to close:
    sandbox.py.)"""
    repo, worktree = tmp_path / "repo", tmp_path / "wt"
    git = ["git", "-c", "user.name=T", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "-q", "--allow-empty", "-m", "base"], check=True)
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "-q", "-b", "fleet/a", str(worktree)], check=True)
    common = repo / ".git"
    write = [worktree, common / "objects", common / "worktrees" / "wt", common / "refs/heads/fleet",
             common / "logs/refs/heads/fleet"]
    (worktree / "x.py").write_text("x = 1\n")
    commit = [*git, "-c", "gc.auto=0", "-c", "maintenance.auto=false", "commit", "-qam", "x"]
    assert run(["sh", "-c", f"git add x.py && {' '.join(commit)}"], write, cwd=worktree).returncode == 0
    assert subprocess.run(["git", "-C", str(repo), "log", "-1", "--format=%s", "fleet/a"], capture_output=True,
                          text=True).stdout == "x\n"
    config = (common / "config").read_text()
    for attack in (["git", "config", "core.hooksPath", "/tmp"], ["sh", "-c", f"echo x > {common / 'hooks/pre-commit'}"],
                   ["sh", "-c", f"echo x > {repo / '.gitfleet.toml'}"], ["git", "branch", "side"]):
        assert run(attack, write, cwd=worktree).returncode != 0, attack
    assert (common / "config").read_text() == config and not (common / "hooks/pre-commit").exists()
    assert not (repo / ".gitfleet.toml").exists() and not (common / "refs/heads/side").exists()
    assert run(["git", "branch", "side"], write, cwd=worktree, sandboxed=False).returncode == 0


def test_a_unix_socket_service_elsewhere_does_no_write_for_the_sandbox(place: tuple[Path, Path],
                                                                       tmp_path: Path) -> None:
    """Landlock does not mediate connect() to a Unix socket file: every socket listened on when
    the sandbox starts, outside the sandbox's own directories, is masked (a server of its own,
    inside them, stays reachable)."""
    inside, outside = place
    made = outside / "made-by-service"
    servers = []

    def serve(path: str, mark: Path) -> None:
        server = socket.socket(socket.AF_UNIX)
        server.bind(path)
        server.listen()
        servers.append(server)

        def loop() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return  # (closed)
                if conn.recv(100) == b"write":
                    mark.write_text("done\n")
                conn.close()

        threading.Thread(target=loop, daemon=True).start()

    theirs, mine = str(tmp_path / "service.sock"), str(inside / "own.sock")
    serve(theirs, made)
    serve(mine, inside / "own-reached")
    client = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect(sys.argv[1])\n"
              "except OSError as e:\n    print(e); sys.exit(1)\ns.sendall(b'write')\ns.close()\n")
    try:
        res = run([sys.executable, "-c", client, theirs], [inside])
        assert res.returncode == 1, res
        time.sleep(0.2)
        assert not made.exists()
        assert run([sys.executable, "-c", client, mine], [inside]).returncode == 0
        assert run([sys.executable, "-c", client, theirs], [inside], sandboxed=False).returncode == 0
        deadline = time.monotonic() + 5
        while not (made.exists() and (inside / "own-reached").exists()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert made.exists() and (inside / "own-reached").exists()  # (only the unsandboxed call reached it)
    finally:
        for server in servers:
            server.close()


def test_a_descriptor_opened_outside_is_no_way_out(place: tuple[Path, Path]) -> None:
    inside, outside = place
    target = outside / "theirs.txt"
    with open(target, "a") as fh:  # (held open by whatever started the sandbox)
        argv = [sys.executable, "-c", f"import os; os.write({fh.fileno()}, b'via-fd\\n')"]
        line = sandbox.command(argv, [str(inside)], [])
        res = subprocess.run(line, pass_fds=(fh.fileno(),), capture_output=True, text=True, timeout=60)
        assert res.returncode != 0 and target.read_text() == "theirs\n", res
        assert subprocess.run(argv, pass_fds=(fh.fileno(),), timeout=60).returncode == 0
    assert target.read_text() == "theirs\nvia-fd\n"


def test_only_a_socket_file_itself_is_masked_never_what_its_name_points_at(tmp_path: Path) -> None:
    """A listening socket's name is its binder's to choose: a newline followed by a forged line
    naming a directory, or the socket file replaced by a symlink afterwards, masks nothing."""
    import tempfile

    from git_fleet import namespaces

    tmp_path = Path(tempfile.mkdtemp(prefix="s", dir="/tmp"))  # (a socket's name is at most 107 bytes)
    target = tmp_path / "hooks"
    target.mkdir()
    forged = socket.socket(socket.AF_UNIX)
    name = f"{tmp_path}/s\n0: 00000002 00000000 00010000 0001 01 1 {target}"  # (a second line, forged)
    os.makedirs(os.path.dirname(name))
    forged.bind(name)
    forged.listen()
    swapped = socket.socket(socket.AF_UNIX)
    swapped.bind(str(tmp_path / "swapped.sock"))
    swapped.listen()
    (tmp_path / "swapped.sock").unlink()
    (tmp_path / "swapped.sock").symlink_to(target)
    real = socket.socket(socket.AF_UNIX)
    real.bind(str(tmp_path / "real.sock"))
    real.listen()
    try:
        found = namespaces.listening_sockets()
        assert str(tmp_path / "real.sock") in found
        assert str(target) not in found and str(tmp_path / "swapped.sock") not in found
    finally:
        for s in (forged, swapped, real):
            s.close()
        shutil.rmtree(tmp_path)


PROBE = """
import errno, fcntl, os, socket, sys, termios, ctypes
what = sys.argv[1]
try:
    if what == "tiocsti":
        fcntl.ioctl(0, termios.TIOCSTI, b"x")
    elif what == "mptcp":
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262).close()
    elif what == "fastopen":
        s = socket.socket()
        s.sendto(b"GET", 0x20000000, ("127.0.0.1", int(sys.argv[2])))
    elif what == "keyring":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syscall(248, b"user", b"fleet-test", b"x", 1, -4) < 0:  # add_key to the user keyring
            raise OSError(ctypes.get_errno(), "add_key")
except OSError as e:
    print("refused", errno.errorcode.get(e.errno, e.errno)); sys.exit(1)
print("done")
"""


@pytest.mark.parametrize("route", ["tiocsti", "mptcp", "fastopen", "keyring"])
def test_what_landlock_leaves_open_the_filter_closes(place: tuple[Path, Path], route: str) -> None:
    """Typing into the terminal (which the shell outside reads as its input), TCP that never
    calls connect() (where Landlock checks the port), the person's keyrings."""
    inside, _ = place
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = str(server.getsockname()[1])
    primary, secondary = os.openpty()  # (a terminal of the test's own, as the agent's pane is)
    try:
        def probe(sandboxed: bool) -> subprocess.CompletedProcess[str]:
            argv = [sys.executable, "-c", PROBE, route, port]
            line = sandbox.command(argv, [str(inside)], []) if sandboxed else argv
            return subprocess.run(line, stdin=secondary, capture_output=True, text=True, timeout=60)

        res = probe(True)
        assert res.returncode == 1 and res.stdout.startswith("refused EPERM"), res
        outside = probe(False)
        if route == "tiocsti" and outside.returncode != 0:
            pytest.skip("this kernel refuses TIOCSTI to everyone (dev.tty.legacy_tiocsti = 0)")
        assert outside.returncode == 0, outside
    finally:
        os.close(primary)
        os.close(secondary)
        server.close()


def test_a_socket_made_after_the_sandbox_started_anywhere_in_tmp_is_out_of_sight(place: tuple[Path, Path]) -> None:
    """/tmp, /var/tmp and /dev/shm are the sandbox's own (but the directories it must see): a
    server that starts later and listens in a directory nobody masked is not reachable."""
    inside, outside = place
    later = Path(tempfile.mkdtemp(prefix="fleet-later-", dir="/tmp"))
    path, go, made = later / "service.sock", inside / "go", outside / "made-by-service"
    client = (f"import os, socket, sys, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.05)\n"
              "s = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect(sys.argv[1])\nexcept OSError as e:\n"
              "    print(e); sys.exit(1)\ns.sendall(b'write')\n")
    proc = subprocess.Popen(sandbox.command([sys.executable, "-c", client, str(path)], [str(inside)], [],
                                            keep=[str(inside.parent)]),
                            start_new_session=True, stdout=subprocess.PIPE, text=True)
    server = socket.socket(socket.AF_UNIX)
    try:
        time.sleep(0.3)  # (the sandbox has started)
        server.bind(str(path))
        server.listen()
        server.settimeout(5)
        go.touch()
        assert proc.wait(timeout=30) == 1 and "No such file" in (proc.stdout.read() if proc.stdout else "")
        assert run([sys.executable, "-c", client, str(path)], [inside], sandboxed=False).returncode == 0
        conn, _ = server.accept()  # (unsandboxed, it reached the server: the route works)
        if conn.recv(100) == b"write":
            made.write_text("done\n")
        conn.close()
        assert made.exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        server.close()
        shutil.rmtree(later, ignore_errors=True)


def test_no_capability_is_kept_so_the_read_only_view_stays(place: tuple[Path, Path]) -> None:
    """Its user namespace gives the process every capability over its own mounts, and root keeps
    them across exec: all are dropped (bounding set too), and the mount API is refused, so that
    nothing makes the read-only view writable again (mount_setattr clearing MOUNT_ATTR_RDONLY)."""
    inside, outside = place
    probe = ("import ctypes, os\n"
             "caps = {l.split(':')[0]: int(l.split()[1], 16) for l in open('/proc/self/status') if l.startswith('Cap')}\n"
             "libc = ctypes.CDLL(None, use_errno=True)\n"
             "attr = (ctypes.c_uint64 * 4)(0, 1, 0, 0)  # attr_clr = MOUNT_ATTR_RDONLY\n"
             "r = libc.syscall(442, -100, b'/', 0x8000, ctypes.byref(attr), 32)\n"
             "print(caps['CapEff'], caps['CapBnd'], r)\n")
    res = run([sys.executable, "-c", probe], [inside])
    assert res.returncode == 0 and res.stdout.split() == ["0", "0", "-1"], res
    plain = run([sys.executable, "-c", probe], [inside], sandboxed=False)
    assert plain.stdout.split()[1] != "0"  # (outside, the bounding set is whole: there is something to drop)
    res = run(["sh", "-c", f"chmod 000 {outside / 'theirs.txt'}"], [inside])
    assert res.returncode != 0 and os.stat(outside / "theirs.txt").st_mode & 0o777 != 0


def test_dev_shm_is_its_own_and_what_it_writes_there_stays_inside(place: tuple[Path, Path]) -> None:
    inside, _ = place
    name = f"/dev/shm/fleet-test-{os.getpid()}-{time.monotonic_ns()}"
    res = run(["sh", "-c", f"echo mine > {name} && cat {name}"], [inside])
    assert res.returncode == 0 and res.stdout == "mine\n", res
    assert not os.path.exists(name)  # (a tmpfs of the sandbox's own, gone with it)


def test_a_tmux_server_started_after_the_sandbox_is_out_of_its_reach_too(place: tuple[Path, Path],
                                                                         tmp_path: Path) -> None:
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.skip("tmux is not installed (.ci/run installs it)")
    inside, outside = place
    env = {**os.environ, "TMUX_TMPDIR": str(tmp_path / "later")}
    (tmp_path / "later").mkdir()
    socket_path = tmp_path / "later" / f"tmux-{os.getuid()}" / "default"
    made, go = outside / "made-by-tmux", inside / "go"
    script = (f"while [ ! -e {go} ]; do sleep 0.05; done; tmux -S {socket_path} new-window -d 'touch {made}'; "
              f"echo $? > {inside / 'rc'}")
    proc = subprocess.Popen(sandbox.command(["sh", "-c", script], [str(inside)], [], env), env=env,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not socket_path.parent.exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # (the sandbox has started: it made the directory tmux will use)
        subprocess.run([tmux, "new-session", "-d", "-s", "later", "sleep 600"], env=env, check=True)
        go.touch()
        assert proc.wait(timeout=30) == 0
        assert (inside / "rc").read_text().strip() != "0"
        time.sleep(0.3)
        assert not made.exists()
        assert subprocess.run([tmux, "-S", str(socket_path), "new-window", "-d", f"touch {made}"],
                              env=env).returncode == 0
        deadline = time.monotonic() + 5
        while not made.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert made.exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        subprocess.run([tmux, "-S", str(socket_path), "kill-server"], capture_output=True)


def test_the_seccomp_filter_is_well_formed_and_the_masks_cover_the_known_servers() -> None:
    """In process (the runner's own process cannot be measured): every jump of the filter lands
    inside it and it ends by allowing; the masks name tmux's places (made if missing), the
    runtime directory, and the socket $TMUX, SSH_AUTH_SOCK and the session bus name."""
    from git_fleet import seccomp

    code = seccomp.program()
    for i, (op, jt, jf, _) in enumerate(code):
        if op & 0x07 == 0x05:  # (a jump)
            assert i + 1 + max(jt, jf) < len(code)
    assert code[-1] == (0x06, 0, 0, 0x7FFF0000)
    uid = os.getuid()
    found = sandbox.masks({"TMUX": "/srv/t/s,1,0", "TMUX_TMPDIR": "/srv/tt", "SSH_AUTH_SOCK": "/srv/ssh/agent",
                           "DBUS_SESSION_BUS_ADDRESS": "unix:path=/srv/bus,guid=1", "XDG_RUNTIME_DIR": "/srv/run"})
    assert {f"/tmp/tmux-{uid}/", f"/srv/tt/tmux-{uid}/", "/srv/t", "/srv/ssh", "/srv/bus", "/srv/run"} <= set(found)
    line = sandbox.command(["true"], ["/w"], [443], {})
    assert line[line.index("--") + 1:] == ["true"] and line[line.index("--write"):][:2] == ["--write", "/w"]
