"""The sandbox's cost, side by side in one run: starting a command in it against starting the
same command plainly, and a commit inside it against the same commit outside.

    python bench/sandbox.py [--runs 30]

Each start runs `true` (so only the start is timed): plainly; under `python -I -S -c pass` (what
the runner costs as a Python start); and in the sandbox (sandbox_run.py: a user and mount
namespace with the local servers' sockets masked, Landlock, the command exec'd). The commit is
`git commit -q --allow-empty -m x` in a linked worktree of a small repository, with the write set
a commit needs (sandbox.py's test), plainly and in the sandbox. Medians and p90 in ms.
Targets (issue: sandboxed agents): a start adds under 50 ms; a commit within 10 %.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from git_fleet import sandbox  # noqa: E402


def timed(argv: list[str], cwd: Path | None = None, runs: int = 30) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
        times.append((time.perf_counter() - start) * 1000)
    return times


def cell(times: list[float]) -> str:
    ordered = sorted(times)
    return f"{statistics.median(ordered):.1f} / {ordered[int(len(ordered) * 0.9) - 1]:.1f}"


def in_a_fleet(root: Path, rounds: int, n: int = 30) -> tuple[list[tuple[str, list[float]]], float]:
    """A commit of a change in the agent's zone, with the fleet's commit hook, by a shell that
    `git fleet-run` started: sandboxed (its own object store, the repository's as an alternate,
    the zone cache read-only) and not, taking turns; per commit, the shell's start taken off."""
    repo = root / "fleet"
    os.environ.update(GIT_AUTHOR_NAME="B", GIT_AUTHOR_EMAIL="b@example.com", GIT_COMMITTER_NAME="B",
                      GIT_COMMITTER_EMAIL="b@example.com")
    (repo / "a").mkdir(parents=True)
    (repo / "a" / "f").write_text("0\n")
    for step in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-qm", "base"],
                 ["git", "fleet-init"], ["git", "fleet-add", "a", "--zone", "a/**"],
                 ["git", "fleet-set", "a", "--sandbox", "on"]):
        subprocess.run(step, cwd=repo, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    script = "; ".join(f"echo {i} > a/f; git commit -qam c{i}" for i in range(n))
    inside: list[float] = []
    outside: list[float] = []
    starts: dict[str, list[float]] = {"--sandbox": [], "--no-sandbox": []}
    for _ in range(rounds):
        for flag, into in (("--sandbox", inside), ("--no-sandbox", outside)):
            run = ["git", "fleet-run", flag, "a", "--", "sh", "-c"]
            started = timed([*run, "true"], cwd=repo, runs=3)
            starts[flag] += started
            into += [(t - statistics.median(started)) / n for t in timed([*run, script], cwd=repo, runs=1)]
    return ([("`git fleet-run --sandbox a -- sh -c true` (the fleet's whole start: layout, CLI state, runner)",
              starts["--sandbox"]),
             ("`git fleet-run --no-sandbox a -- sh -c true`", starts["--no-sandbox"]),
             (f"commit with the fleet's hook, sandboxed (per commit, of {n}, its start taken off)", inside),
             (f"commit with the fleet's hook, not sandboxed (per commit, of {n}, its start taken off)", outside)],
            statistics.median(inside) / statistics.median(outside))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    missing = sandbox.support().missing()
    if missing:
        print(f"no sandbox on this system: {missing}")
        return 1
    with tempfile.TemporaryDirectory(prefix="fleet-sandbox-bench-") as tmp:
        root = Path(tmp)
        repo, wt = root / "repo", root / "wt"
        git = ["git", "-c", "user.name=B", "-c", "user.email=b@example.com", "-c", "gc.auto=0",
               "-c", "maintenance.auto=false"]
        subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
        subprocess.run([*git, "-C", str(repo), "commit", "-q", "--allow-empty", "-m", "base"], check=True)
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "-q", "-b", "fleet/a", str(wt)], check=True)
        common = repo / ".git"
        write = [str(p) for p in (wt, common / "objects", common / "worktrees" / "wt", common / "refs/heads/fleet",
                                  common / "logs/refs/heads/fleet")]
        commit = [*git, "commit", "-q", "--allow-empty", "-m", "x"]
        rows = []
        for _ in range(2):  # (warm the caches; the second round is the one reported)
            rows = [
                ("start `true`, plainly", timed(["true"], runs=args.runs)),
                ("start `python -I -S -c pass` (a Python start, for scale)",
                 timed([sys.executable, "-I", "-S", "-c", "pass"], runs=args.runs)),
                ("start `true` in the sandbox", timed(sandbox.command(["true"], write, [443]), runs=args.runs)),
                ("commit in a linked worktree, plainly", timed(commit, cwd=wt, runs=args.runs)),
                ("commit in a linked worktree, in the sandbox (runner included)",
                 timed(sandbox.command(commit, write, [443]), cwd=wt, runs=args.runs)),
            ]
        # a commit made by a shell already in the sandbox, as an agent's are: 100 commits a run,
        # less the time the same shell takes to start and run nothing (in the sandbox: the
        # runner's start), sandboxed and plain runs taking turns (drift hits both alike)
        n = 100
        script = "; ".join([" ".join(commit)] * n)
        inside: list[float] = []
        outside: list[float] = []
        for _ in range(max(5, args.runs // 3)):
            start_out = statistics.median(timed(["sh", "-c", "true"], cwd=wt, runs=3))
            start_in = statistics.median(timed(sandbox.command(["sh", "-c", "true"], write, [443]), cwd=wt, runs=3))
            outside += [(t - start_out) / n for t in timed(["sh", "-c", script], cwd=wt, runs=1)]
            inside += [(t - start_in) / n for t in timed(sandbox.command(["sh", "-c", script], write, [443]),
                                                         cwd=wt, runs=1)]
        rows += [(f"commit by a shell in the sandbox (per commit, of {n}, its start taken off)", inside),
                 (f"commit by a plain shell (per commit, of {n}, its start taken off)", outside)]
        ratio = statistics.median(inside) / statistics.median(outside)
        fleet_rows, fleet_ratio = in_a_fleet(root, max(5, args.runs // 3))
        rows += fleet_rows
    load = os.getloadavg()[0]
    print(f"Landlock ABI {sandbox.support().landlock_abi}; {args.runs} runs; load average {load:.1f}")
    print("| what | median / p90 ms |\n|---|---|")
    for name, times in rows:
        print(f"| {name} | {cell(times)} |")
    print(f"A commit in the sandbox takes {ratio:.2f}x the time of the same commit outside (target: 1.10x).")
    print(f"In a fleet (its commit hook, the agent's own object store): {fleet_ratio:.2f}x (target: 1.10x).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
