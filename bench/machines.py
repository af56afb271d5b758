"""The bus across machines, side by side with the bus in files, in one run.

    python bench/machines.py [--tasks 300] [--machines 3] [--workers 8] [--fold-tasks 1000]

Machines are clones in a temporary directory, each with its own HOME, meeting at a bare
repository served by a real `git daemon` on 127.0.0.1. Each worker is its own process (the
stand-in's bus worker, `python -m git_fleet.standin --drain-fleet NAME`) claiming and finishing
one task at a time until none is left. The same workers, all on one machine, drain the same
number of tasks from a fleet whose bus is files. Reported: tasks per second (claim and finish),
each claim's latency (median and 95th percentile), one worker alone (an uncontended claim), the
number of refs on the remote after --fold-tasks tasks were added and done (ended tasks are
folded into one ref, so it stays near the number in flight), and what a commit in an agent's
worktree costs with the post-commit hook that publishes it, against a fleet on one machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from git_fleet.fleet import Fleet  # noqa: E402


def run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    return subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


class World:
    """A hub served by git daemon, and machines: clones with a HOME each."""

    def __init__(self, root: Path, remote: bool):
        self.root, self.remote = root, remote
        hub = root / "hub.git"
        base = self.env("laptop")
        run(["git", "init", "-q", "--bare", "-b", "main", str(hub)], root, base)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.daemon = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack",
                                        f"--base-path={root}", "--listen=127.0.0.1", f"--port={port}", str(root)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.url = f"git://127.0.0.1:{port}/hub.git"
        try:
            self._start(root, remote, base)
        except BaseException:
            self.close()  # (a daemon is never left running)
            raise

    def _start(self, root: Path, remote: bool, base: dict[str, str]) -> None:
        deadline = time.time() + 10
        while subprocess.run(["git", "ls-remote", self.url], cwd=root, capture_output=True).returncode != 0:
            assert time.time() < deadline, "git daemon did not start"
            time.sleep(0.1)
        laptop = root / "laptop" / "repo"
        run(["git", "clone", "-q", self.url, str(laptop)], root, base)
        run(["git", "commit", "-q", "--allow-empty", "-m", "start"], laptop, base)
        run(["git", "branch", "-M", "main"], laptop, base)
        run(["git", "fleet-init", *(["--remote", "origin"] if remote else [])], laptop, base)
        run(["git", "add", ".gitfleet.toml"], laptop, base)
        run(["git", "commit", "-q", "-m", "the fleet"], laptop, base)
        run(["git", "push", "-q", "-u", "origin", "main"], laptop, base)
        self.laptop = laptop

    def env(self, name: str) -> dict[str, str]:
        home = self.root / name / "home"
        if not home.exists():
            home.mkdir(parents=True)
            (home / ".gitconfig").write_text(f"[user]\n\tname = {name}\n\temail = {name}@example.com\n")
        return {**os.environ, "HOME": str(home), "PYTHONPATH": str(HERE.parent)}

    def machine(self, name: str) -> Path:
        where = self.root / name / "repo"
        run(["git", "clone", "-q", self.url, str(where)], self.root, self.env(name))
        run(["git", "fleet-init", "--remote", "origin"], where, self.env(name))
        return where

    def add(self, n: int) -> None:
        bus = Fleet.here(self.laptop).bus()
        for i in range(n):
            bus.add(f"task {i}")

    def drain(self, places: dict[str, Path], workers: int) -> tuple[int, float, list[float]]:
        """Every worker of every place until none can claim: (tasks, seconds, claim latencies)."""
        start = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-m", "git_fleet.standin", "--drain-fleet", f"{name}-w{i}"],
                                  cwd=where, env=self.env(name), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, start_new_session=True)
                 for name, where in places.items() for i in range(workers)]
        latencies, done = [], 0
        for p in procs:
            out, err = p.communicate()
            assert p.returncode == 0, err
            for line in out.splitlines():
                word = line.split()
                if word[0] == "claimed":
                    latencies.append(float(word[2]))
                elif word[0] == "done":
                    done += 1
        return done, time.perf_counter() - start, latencies

    def close(self) -> None:
        os.killpg(self.daemon.pid, signal.SIGTERM)
        self.daemon.wait()


def quantiles(xs: list[float]) -> str:
    ms = sorted(x * 1000 for x in xs)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"{statistics.median(ms):.0f} / {p95:.0f} ms"


def side(remote: bool, tasks: int, machines: int, workers: int) -> tuple[str, str, str]:
    root = Path(tempfile.mkdtemp(prefix="fleet-machines-"))
    world = World(root, remote)
    try:
        world.add(tasks)
        places = {f"m{i}": world.machine(f"m{i}") for i in range(1, machines + 1)} if remote else {"laptop": world.laptop}
        done, seconds, lat = world.drain(places, workers if remote else workers * machines)
        assert done == tasks, (done, tasks)
        world.add(50)
        _, _, alone = world.drain({"solo": world.machine("solo") if remote else world.laptop}, 1)
        return f"{done / seconds:.1f} tasks/s", quantiles(lat), quantiles(alone)
    finally:
        world.close()
        shutil.rmtree(root, ignore_errors=True)


def refs_after(n: int, machines: int, workers: int) -> int:
    root = Path(tempfile.mkdtemp(prefix="fleet-refs-"))
    world = World(root, True)
    try:
        world.add(n)
        world.drain({f"m{i}": world.machine(f"m{i}") for i in range(1, machines + 1)}, workers)
        return len(run(["git", "ls-remote", world.url], root, world.env("laptop")).splitlines())
    finally:
        world.close()
        shutil.rmtree(root, ignore_errors=True)


def commits(runs: int) -> tuple[str, str]:
    """A 1-file commit in an agent's worktree, the fleet's hooks on: a fleet on one machine against
    one across machines (its post-commit hook starts the background publisher), interleaved."""
    worlds, trees = [], []
    for remote in (False, True):
        root = Path(tempfile.mkdtemp(prefix="fleet-commit-"))
        world = World(root, remote)
        env = world.env("laptop")
        run(["git", "fleet-add", "api", "--zone", "src/**"], world.laptop, env)
        if remote:
            run(["git", "fleet-join", "api"], world.laptop, env)
        worlds.append(world)
        trees.append((world.laptop.parent / "repo-api", env))
    times: list[list[float]] = [[], []]
    try:
        for i in range(runs):
            for side, (tree, env) in enumerate(trees):
                (tree / "src").mkdir(exist_ok=True)
                (tree / "src" / "f.py").write_text(f"x = {i}\n")
                run(["git", "add", "src/f.py"], tree, env)
                start = time.perf_counter()
                run(["git", "commit", "-q", "-m", f"c{i}"], tree, env)
                times[side].append(time.perf_counter() - start)
        deadline = time.time() + 60  # (the publishers end once they have pushed)
        while subprocess.run(["pgrep", "-f", "git_fleet.publish"], capture_output=True).returncode == 0:
            assert time.time() < deadline, "a publisher did not end"
            time.sleep(0.2)
        return (f"{statistics.median(times[0]) * 1000:.0f} ms", f"{statistics.median(times[1]) * 1000:.0f} ms")
    finally:
        for world in worlds:
            world.close()
            shutil.rmtree(world.root, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=300)
    ap.add_argument("--machines", type=int, default=3)
    ap.add_argument("--workers", type=int, default=8, help="per machine")
    ap.add_argument("--fold-tasks", type=int, default=1000)
    ap.add_argument("--commits", type=int, default=15, help="commits timed on each side")
    args = ap.parse_args()
    one, across = commits(args.commits)
    print(f"| a 1-file commit in an agent's worktree | one machine: {one} | across machines: {across} |",
          file=sys.stderr)
    total = args.machines * args.workers
    lines = ["| bus | claim and finish | claim latency, median / p95 | one worker alone, median / p95 |",
             "|---|---|---|---|"]
    for remote in (False, True):
        rate, lat, alone = side(remote, args.tasks, args.machines, args.workers)
        label = (f"across {args.machines} machines x {args.workers} workers, git daemon on loopback" if remote
                 else f"files, {total} workers on one machine")
        lines.append(f"| {label}, {args.tasks} tasks | {rate} | {lat} | {alone} |")
        print(lines[-1], file=sys.stderr)
    refs = refs_after(args.fold_tasks, args.machines, args.workers)
    lines.append(f"\nrefs on the remote after {args.fold_tasks:,} tasks added and done: {refs}")
    lines.append(f"a 1-file commit in an agent's worktree (median of {args.commits}): {one} in a fleet on one machine, "
                 f"{across} in one across machines (its post-commit hook starts the publisher)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
