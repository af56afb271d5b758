"""Bus benchmarks: claims per second with 1, 4 and 16 concurrent workers on 1,000 tasks, and
`git fleet-plan` over 10,000 tasks.

    python bench/bus.py [--tasks 1000] [--plan-tasks 10000]

Each worker is its own process claiming and finishing tasks until none is left, as agents do.
There is no plain-git counterpart: the number to watch is claims per second as workers are added.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from git_fleet.bus import Bus  # noqa: E402


def fill(root: Path, n: int) -> Bus:
    bus = Bus(root)
    for i in range(n):
        bus.add(f"task {i}", priority=i % 3)
    return bus


def claims(n_tasks: int, workers: int) -> float:
    root = Path(tempfile.mkdtemp(prefix="fleet-bus-"))
    try:
        fill(root, n_tasks)
        env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
        start = time.perf_counter()
        # the stand-in's bus worker (git_fleet/standin.py), as the tests' concurrent workers
        procs = [subprocess.Popen([sys.executable, "-m", "git_fleet.standin", "--drain", str(root), f"w{i}"],
                                  stdout=subprocess.PIPE, text=True, env=env) for i in range(workers)]
        total = sum(len(p.communicate()[0].split()) for p in procs)
        elapsed = time.perf_counter() - start
        assert total == n_tasks, (total, n_tasks)
        return total / elapsed
    finally:
        shutil.rmtree(root)


def plan(n_tasks: int) -> float:
    root = Path(tempfile.mkdtemp(prefix="fleet-plan-"))
    try:
        Bus(root).ensure()
        for i in range(1, n_tasks + 1):  # specs as `add` writes them, without its fsyncs: this is setup
            deps = f"[{i - 1}]" if i % 10 == 0 else "[]"
            (root / "tasks" / f"task-{i:03d}-task-{i}.md").write_text(
                f"---\nid: {i}\ntitle: task {i}\ndepends: {deps}\npriority: {i % 3}\n---\n\ntask {i}\n")
        for i in range(1, n_tasks // 2 + 1):  # half of them done, written as claim and finish would
            name = f"task-{i:03d}"
            (root / "tasks/.state" / f"{name}.claim-1").write_text('{"agent": "w", "attempt": 1, "expires": 0}')
            (root / "results" / f"{name}-result.md").write_text(f"---\ntask: {name}\nstatus: done\nagent: w\n---\n\nok\n")
        fresh = Bus(root)  # as `git fleet-plan` would, with nothing cached
        start = time.perf_counter()
        fresh.write_plan()
        return (time.perf_counter() - start) * 1000
    finally:
        shutil.rmtree(root)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--plan-tasks", type=int, default=10000)
    args = ap.parse_args()
    lines = ["| bus benchmark | result |", "|---|---|"]
    for workers in (1, 4, 16):
        lines.append(f"| claim + finish, {workers} worker(s), {args.tasks:,} tasks | {claims(args.tasks, workers):.0f} tasks/s |")
        print(lines[-1], file=sys.stderr)
    lines.append(f"| git fleet-plan over {args.plan_tasks:,} tasks (half done) | {plan(args.plan_tasks):.0f} ms |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
