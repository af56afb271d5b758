"""git-fleet benchmarks, each side by side with plain git in one run.

    python bench/run.py [--sizes 1000,100000] [--runs 15] [--out bench/results.md]
    python bench/run.py --only-commits --python NEW/bin/python --baseline OLD/bin/python

Generates the test repositories deterministically under bench/repos/ (reused when present),
then times, interleaving the two sides so that drift hits both alike:
  - a commit of 1 and of 1,000 files in an agent's worktree: plain git (no hooks) against the
    same commit through the fleet's pre-commit hook; the difference is what the hook adds;
  - creating an agent: `git worktree add -b` against `git fleet-add`;
  - on 100,000 files: the conflict forecast, the status of 11 agents, a checkpoint merge;
  - task claims: a JSON task list under flock against the fleet's bus, 1 and 8 workers.
Prints median, min and max in milliseconds and the ratio, as a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPOS = HERE / "repos"
AGENT_FILES = 1000  # of the repository's files, those inside the agent's zone: enough for a 1,000-file commit
ENV = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
       "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com", "NO_COLOR": "1",
       "GIT_CONFIG_NOSYSTEM": "1"}


def sh(*args: str, cwd: Path | None = None, input: bytes | None = None) -> str:
    proc = subprocess.run(args, cwd=cwd, input=input, capture_output=True, env=ENV)
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(args)} failed in {cwd}:\n{proc.stderr.decode()}")
    return proc.stdout.decode()


def generate(size: int) -> Path:
    """A repository of `size` files (AGENT_FILES of them in the agent's zone), made with
    fast-import: the same bytes every time."""
    root = REPOS / f"repo-{size}"
    main = root / "main"
    if (main / ".gitfleet.toml").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    sh("git", "init", "-q", "-b", "main", str(main))
    stream = [b"commit refs/heads/main\ncommitter bench <bench@example.com> 1700000000 +0000\ndata 4\ninit\n"]
    for i in range(max(0, size - AGENT_FILES)):
        data = f"file {i}\n".encode()
        stream.append(b"M 100644 inline src/d%03d/f%06d.txt\ndata %d\n%s\n" % (i % 500, i, len(data), data))
    for i in range(AGENT_FILES):
        data = f"agent {i}\n".encode()
        stream.append(b"M 100644 inline agent/f%05d.txt\ndata %d\n%s\n" % (i, len(data), data))
    sh("git", "fast-import", "--quiet", cwd=main, input=b"".join(stream) + b"\n")
    sh("git", "reset", "-q", "--hard", "main", cwd=main)
    sh("git", "config", "gc.auto", "0", cwd=main)
    sh("git", "fleet-init", cwd=main)
    sh("git", "fleet-add", "agent", "--zone", "agent/**", cwd=main)
    return root


def timed(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, capture_output=True, env=ENV)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(args)} failed:\n{proc.stderr.decode()}")
    return elapsed * 1000


def fleet_hooks(root: Path, name: str, python: str) -> Path:
    """A hooks directory whose pre-commit is the fleet's shim run by `python` (a git-fleet
    environment of its choice: another version, or one installed the same way as another)."""
    sys.path.insert(0, str(HERE.parent))
    from git_fleet import hooks

    where = root / name
    where.mkdir(exist_ok=True)
    (where / "pre-commit").write_text(hooks.render("pre-commit", python))
    (where / "pre-commit").chmod(0o755)
    return where


def commit_bench(root: Path, nfiles: int, runs: int, python: str | None = None,
                 baseline: str | None = None) -> tuple[list[float], ...]:
    """Commits with no hook, with a hook that does nothing (git's own cost of running one), and
    with the fleet's hook (run by `python`, default the one git fleet-init installed), in turn;
    with `baseline`, also with the fleet hook of another git-fleet run by that Python. The two
    fleet hooks then overwrite each other's zone cache, so every side makes an untimed commit
    before its timed one, and each is timed warm."""
    wt = root / "agent-agent"
    no_hooks = root / "no-hooks"
    no_hooks.mkdir(exist_ok=True)
    noop = root / "noop-hooks"
    noop.mkdir(exist_ok=True)
    (noop / "pre-commit").write_text("#!/bin/sh\nexit 0\n")
    (noop / "pre-commit").chmod(0o755)
    fleet = ["-c", f"core.hooksPath={fleet_hooks(root, 'fleet-hooks', python)}"] if python else []
    sides: list[tuple[list[str], list[float]]] = [
        (["-c", f"core.hooksPath={no_hooks}"], []), (["-c", f"core.hooksPath={noop}"], []), (fleet, [])]
    if baseline:
        sides.append((["-c", f"core.hooksPath={fleet_hooks(root, 'baseline-hooks', baseline)}"], []))
    for r in range(runs + 1):
        for opts, times in sides:
            for warm in ((True, False) if baseline else (False,)):
                for i in range(nfiles):
                    (wt / f"agent/f{i:05d}.txt").write_text(f"run {r} {len(times)} {opts} {i} {warm}\n")
                sh("git", "add", "agent", cwd=wt)
                t = timed(["git", *opts, "commit", "-q", "-m", f"r{r}"], wt)
                if r and not warm:  # the first round warms the caches
                    times.append(t)
    return tuple(times for _, times in sides)


def add_bench(root: Path, runs: int) -> tuple[list[float], list[float]]:
    """Agent creation, plain against fleet. Removing a 100,000-file worktree leaves the disk busy
    writing back for a while (a plain add right after one took 36 s instead of 7 s here), so the
    disk is synced before every timed add and the sides take turns going first."""
    main = root / "main"
    plain: list[float] = []
    fleet: list[float] = []

    def plain_add(r: int) -> None:
        wt = root / f"wt-plain-{r}"
        os.sync()
        plain.append(timed(["git", "worktree", "add", "-q", "-b", f"plain-{r}", str(wt), "main"], main))
        sh("git", "worktree", "remove", "--force", str(wt), cwd=main)
        sh("git", "branch", "-D", f"plain-{r}", cwd=main)

    def fleet_add(r: int) -> None:
        os.sync()
        fleet.append(timed(["git", "fleet-add", f"b{r}", "--zone", f"zone{r}/**", "--force",
                            "--path", str(root / f"wt-fleet-{r}")], main))
        sh("git", "fleet-rm", f"b{r}", cwd=main)

    for r in range(runs):
        for step in ((plain_add, fleet_add) if r % 2 == 0 else (fleet_add, plain_add)):
            step(r)
    return plain, fleet


# -- merges: 10 agent branches of 200 changed files each, one conflicting pair --------------------------

MERGE_AGENTS = 10


def merge_setup(root: Path) -> tuple[Path, str, str]:
    """Agents m0..m9 (branches only, made with fast-import): m8 and m9 both change
    shared/conflict.txt; m9's clean commit is returned so the merge benchmark can use it."""
    main = root / "main"
    cfg = main / ".gitfleet.toml"
    if "[agents.m0]" not in cfg.read_text():
        base = sh("git", "rev-parse", "main", cwd=main).strip()
        stream = [b"commit refs/heads/main\ncommitter bench <bench@example.com> 1700000001 +0000\ndata 6\nshared\n"
                  b"from %s\nM 100644 inline shared/conflict.txt\ndata 5\nbase\n\n" % base.encode()]
        for i in range(MERGE_AGENTS):
            stream.append(b"commit refs/heads/fleet/m%d\ncommitter bench <bench@example.com> 1700000002 +0000\n"
                          b"data 5\nwork\nfrom refs/heads/main\n" % i)
            for k in range(200):
                n = i + 500 * k
                stream.append(b"M 100644 inline src/d%03d/f%06d.txt\ndata 8\nchanged\n\n" % (i, n))
            if i >= MERGE_AGENTS - 2:
                stream.append(b"commit refs/heads/fleet/m%d\ncommitter bench <bench@example.com> 1700000003 +0000\n"
                              b"data 7\nclash!\nM 100644 inline shared/conflict.txt\ndata 3\nm%d\n\n" % (i, i))
        sh("git", "fast-import", "--quiet", cwd=main, input=b"".join(stream) + b"\n")
        sh("git", "read-tree", "-m", "-u", base, "main", cwd=main)
        text = cfg.read_text()
        for i in range(MERGE_AGENTS):
            text += (f'\n[agents.m{i}]\nzone = ["src/d{i:03d}/**", "shared/conflict.txt"]\nbranch = "fleet/m{i}"\n'
                     f'worktree = "../no-worktree-m{i}"\n')
        names = ", ".join(f'"m{i}"' for i in range(MERGE_AGENTS))
        cfg.write_text(text + f"\n[checkpoints.big]\nagents = [{names}]\n")
        sh("git", "fleet-zones", "--approve", cwd=main)  # (zones written by hand: a merge counts approved ones)
    last = f"fleet/m{MERGE_AGENTS - 1}"
    return main, sh("git", "rev-parse", last, cwd=main).strip(), sh("git", "rev-parse", last + "~1", cwd=main).strip()


def forecast_bench(main: Path, runs: int) -> tuple[list[float], list[float]]:
    """Every agent against the base and every pair: a loop of merge-tree processes against the fleet's
    forecast (one merge-tree --stdin process), both timed from this process."""
    sys.path.insert(0, str(HERE.parent))
    from git_fleet import merge
    from git_fleet.gateway.repo import Repo

    repo = Repo.discover(main)
    names = [f"m{i}" for i in range(MERGE_AGENTS)]
    tips = {n: repo.branch_tip(f"fleet/{n}") or "" for n in names}
    pairs = [("main", f"fleet/{n}") for n in names]
    pairs += [(f"fleet/{a}", f"fleet/{b}") for k, a in enumerate(names) for b in names[k + 1 :]]
    plain: list[float] = []
    fleet: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        clashes = 0
        for a, b in pairs:
            clashes += subprocess.run(["git", "merge-tree", "--write-tree", "--name-only", a, b], cwd=main,
                                      capture_output=True, env=ENV).returncode
        plain.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        fc = merge.forecast(repo, "main", tips)
        fleet.append((time.perf_counter() - start) * 1000)
        assert clashes == 1 and [c[:2] for c in fc.conflicts] == [("m8", "m9")], (clashes, fc.conflicts)
    return plain, fleet


def status_bench(main: Path, runs: int) -> tuple[list[float], list[float]]:
    """`git fleet-status --json` against the same facts gathered by plain git commands one by one,
    for the same agents: m0..m9 and the commit benchmark's agent (the one with a worktree)."""
    names = ["agent"] + [f"m{i}" for i in range(MERGE_AGENTS)]
    plain: list[float] = []
    fleet: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        sh("git", "status", "--porcelain", "--untracked-files=all", cwd=main.parent / "agent-agent")
        for n in names:
            b = f"fleet/{n}"
            sh("git", "rev-list", "--left-right", "--count", f"main...{b}", cwd=main)
            sh("git", "log", "-1", "--format=%ct", b, cwd=main)
            sh("git", "log", "--name-only", "--format=%H", b, "--not", "main", cwd=main)
            subprocess.run(["git", "merge-tree", "--write-tree", "--name-only", "main", b], cwd=main,
                           capture_output=True, env=ENV)
        for k, a in enumerate(names):
            for b in names[k + 1 :]:
                subprocess.run(["git", "merge-tree", "--write-tree", "--name-only", f"fleet/{a}", f"fleet/{b}"],
                               cwd=main, capture_output=True, env=ENV)
        plain.append((time.perf_counter() - start) * 1000)
        fleet.append(timed(["git", "fleet-status", "--json"], main))
    return plain, fleet


def checkpoint_bench(main: Path, root: Path, clean_m9: str, runs: int) -> tuple[list[float], list[float]]:
    """The 10 branches merged --no-ff: a `git merge` loop in the checked-out base against
    `git fleet-merge --checkpoint` (zone re-check included); both must give the same tree."""
    last = f"fleet/m{MERGE_AGENTS - 1}"
    conflicting = sh("git", "rev-parse", last, cwd=main).strip()
    sh("git", "update-ref", f"refs/heads/{last}", clean_m9, cwd=main)
    start_commit = sh("git", "rev-parse", "main", cwd=main).strip()
    no_hooks = root / "no-hooks"
    no_hooks.mkdir(exist_ok=True)
    plain: list[float] = []
    fleet: list[float] = []
    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            for i in range(MERGE_AGENTS):
                sh("git", "-c", f"core.hooksPath={no_hooks}", "merge", "--no-ff", "--no-edit", "-q", f"fleet/m{i}", cwd=main)
            plain.append((time.perf_counter() - t0) * 1000)
            plain_tree = sh("git", "rev-parse", "main^{tree}", cwd=main)
            sh("git", "reset", "-q", "--hard", start_commit, cwd=main)
            fleet.append(timed(["git", "fleet-merge", "--checkpoint", "big"], main))
            assert sh("git", "rev-parse", "main^{tree}", cwd=main) == plain_tree, "the two merges differ"
            sh("git", "tag", "-d", "fleet/big", cwd=main)
            sh("git", "reset", "-q", "--hard", start_commit, cwd=main)
    finally:
        sh("git", "update-ref", f"refs/heads/{last}", conflicting, cwd=main)
    return plain, fleet


# -- task claims: the fleet's bus against a shared task list under a file lock ------------------------

PLAIN_WORKER = """
import fcntl, json, sys
path, me, n = sys.argv[1], sys.argv[2], 0
while True:
    with open(path + ".lock", "w") as lock:  # claim: lock, read the list, take the first open task, write
        fcntl.flock(lock, fcntl.LOCK_EX)
        tasks = json.load(open(path))
        task = next((t for t in tasks if t["status"] == "open"), None)
        if task is None:
            break
        task["status"], task["agent"] = "claimed", me
        with open(path + ".tmp", "w") as f:
            json.dump(tasks, f)
        __import__("os").replace(path + ".tmp", path)
    with open(path + ".lock", "w") as lock:  # finish: the same, marking it done with its result
        fcntl.flock(lock, fcntl.LOCK_EX)
        tasks = json.load(open(path))
        tasks[task["id"]].update(status="done", result="ok")
        with open(path + ".tmp", "w") as f:
            json.dump(tasks, f)
        __import__("os").replace(path + ".tmp", path)
    n += 1
print(n)
"""



def claims_bench(workers: int, tasks: int, runs: int) -> tuple[list[float], list[float]]:
    """Draining `tasks` tasks with `workers` concurrent processes, each claiming and finishing
    one at a time as agents do: a JSON task list under flock (what file-locked task lists do)
    against the fleet's bus (a file per task, claims by exclusive create, no lock)."""
    import json
    import tempfile

    sys.path.insert(0, str(HERE.parent))
    from git_fleet.bus import Bus

    plain: list[float] = []
    fleet: list[float] = []
    env = {**ENV, "PYTHONPATH": str(HERE.parent)}
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="fleet-claims-") as tmp:
            listing = Path(tmp) / "tasks.json"
            listing.write_text(json.dumps([{"id": i, "title": f"task {i}", "status": "open"} for i in range(tasks)]))
            bus = Bus(Path(tmp) / "bus")
            for i in range(tasks):
                bus.add(f"task {i}")
            # the fleet's side is the stand-in's bus worker (git_fleet/standin.py), which prints the ids it finished
            for argv, target, times in (([sys.executable, "-c", PLAIN_WORKER], listing, plain),
                                        ([sys.executable, "-m", "git_fleet.standin", "--drain"], bus.root, fleet)):
                start = time.perf_counter()
                procs = [subprocess.Popen([*argv, str(target), f"w{i}"], stdout=subprocess.PIPE,
                                          text=True, env=env) for i in range(workers)]
                outs = [p.communicate()[0].split() for p in procs]
                done = sum(int(o[0]) if argv[1] == "-c" else len(o) for o in outs)
                times.append((time.perf_counter() - start) * 1000)
                if done != tasks:
                    sys.exit(f"bench: {done} of {tasks} tasks finished")
    return plain, fleet


def cell(times: list[float] | None) -> str:
    if not times:
        return "n/a"
    return f"{statistics.median(times):.0f} ({min(times):.0f}-{max(times):.0f})"


def row(name: str, plain: list[float], fleet: list[float], noop: list[float] | None = None) -> str:
    p, f = statistics.median(plain), statistics.median(fleet)
    return f"| {name} | {cell(plain)} | {cell(noop)} | {cell(fleet)} | {f - p:+.0f} | {f / p:.2f} |"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,100000", help="repository sizes in files (default 1000,100000)")
    ap.add_argument("--runs", type=int, default=15, help="timed runs per side (default 15)")
    ap.add_argument("--add-runs", type=int, default=2, help="timed runs of agent creation (default 2)")
    ap.add_argument("--merges-on-every-size", action="store_true",
                    help="run the merge benchmarks on small repositories too (they run on 100,000 files)")
    ap.add_argument("--tasks", type=int, default=500, help="tasks drained in the claims benchmark (default 500)")
    ap.add_argument("--out", type=Path, help="also write the table to this file")
    ap.add_argument("--only-commits", action="store_true", help="time the commit hook only")
    ap.add_argument("--python", help="the Python the fleet's hook runs (default: the one git fleet-init installed)")
    ap.add_argument("--baseline", metavar="PYTHON",
                    help="also time the commit hook of the git-fleet this Python imports (an older version), "
                         "side by side in the same rounds")
    args = ap.parse_args()
    if shutil.which("git-fleet-add") is None:
        sys.exit("bench: git-fleet is not on PATH (run ./install.sh, or pip install -e . in a venv)")
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
        f"{sh('git', '--version').strip()}; Python {platform.python_version()}.",
        "",
        "| benchmark | plain git | git, no-op hook | git-fleet | added | ratio |",
        "|---|---|---|---|---|---|",
    ]
    began = time.perf_counter()
    for size in (int(s) for s in args.sizes.split(",")):
        started = time.perf_counter()
        root = generate(size)
        print(f"bench: repository of {size:,} files ready in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        total = max(size, AGENT_FILES)
        for n in (1, 1000):
            plain, noop, fleet, *baseline = commit_bench(root, n, args.runs, args.python, args.baseline)
            lines.append(row(f"commit {n:,} file(s), {total:,}-file repo", plain, fleet, noop))
            if baseline:
                lines.append(row(f"commit {n:,} file(s), {total:,}-file repo, baseline hook", plain, baseline[0], noop))
            print("\n".join(lines[-1 - len(baseline):]), file=sys.stderr)
        if args.only_commits:
            continue
        plain, fleet = add_bench(root, args.add_runs)
        lines.append(row(f"create an agent worktree, {total:,}-file repo", plain, fleet))
        print(lines[-1], file=sys.stderr)
        if size >= 100_000 or args.merges_on_every_size:
            main_dir, _conflicting, clean_m9 = merge_setup(root)
            # (each timed at once, inside this iteration: binding the loop's variables late is what is meant)
            for label, fn in (("conflict forecast, 10 agents (55 merges)",
                               lambda: forecast_bench(main_dir, args.runs)),  # noqa: B023
                              ("status --json of 11 agents",
                               lambda: status_bench(main_dir, max(3, args.runs // 3))),  # noqa: B023
                              ("checkpoint merge of 10 branches",
                               lambda: checkpoint_bench(main_dir, root, clean_m9, 3))):  # noqa: B023
                plain, fleet = fn()
                lines.append(row(f"{label}, {total:,}-file repo", plain, fleet))
                print(lines[-1], file=sys.stderr)
    for workers in (1, 8) if not args.only_commits else ():
        plain, fleet = claims_bench(workers, args.tasks, 3)
        lines.append(row(f"claim and finish {args.tasks:,} tasks, {workers} worker(s)", plain, fleet))
        print(lines[-1], file=sys.stderr)
    lines += ["", "Milliseconds, median (min-max) of the timed runs; 'added' is git-fleet's median less plain git's.",
              f"The whole run took {(time.perf_counter() - began) / 60:.1f} minutes."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
