"""The agent CLIs' hooks, side by side with a hook that does nothing, in one run.

    python bench/agent_hook.py [--runs 50] [--out FILE]

On the 100,000-file benchmark repository (bench/run.py's, reused when present) a fleet of 10
agents is made once under bench/repos/agents-100000/ (`git fleet-init`, `git fleet-add` x10 with
zones; reused on later runs). Every hook is then run the way Claude Code runs one: `sh -c
COMMAND` in the agent's worktree, the event's JSON on stdin, CLAUDE_PROJECT_DIR set, and timed
whole (the shell, `timeout`, Python, the decision, the event line), interleaving the calls so
that drift hits them alike:
  - no-op hooks: `cat >/dev/null`, and Python started as the fleet's hook starts it (-I -S)
    reading stdin, bare and under the gate's `timeout` wrapper;
  - the gate (the PreToolUse command of the worktree's real .claude/settings.local.json) on a
    Write inside the zone, outside it, an Edit through `..`, a Write into another agent's
    worktree, a Bash `git commit -m x`; a Write with the zone cache removed first (cold);
  - the event hook (PostToolUse, Stop) from the same file;
  - 10 gates at once, one per agent's worktree, and 10 at once in one worktree (parallel tool
    calls): each call's time, the burst's wall time, and that every event line arrived whole.
Each case also runs once under `strace -f -e trace=execve` (else with a `git` on PATH that logs
its calls) to show which programs it starts (a Write or Edit decision must start no git), and
5 times with `python -X importtime`. Prints a Markdown table: median, p90 and range in ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run  # noqa: E402  (the other benchmarks' repository generator and environment)

SIZE = 100_000
AGENTS = 10
TARGET_MS = 30.0
ROOT = run.REPOS / f"agents-{SIZE}"
MARKER = "/git_fleet/agent_hook_run.py"
NOOP_PY = "import sys; sys.stdin.buffer.read()"


def zone(i: int) -> list[str]:
    """Agent a<i>'s zone: two directories of src/ and one of docs/, all literal patterns (matched
    without `re`); the last agent's ends with a wildcard exclusion, so its matching imports `re`."""
    patterns = [f"src/d{i:03d}/**", f"src/d{i + AGENTS:03d}/**", f"docs/a{i}/"]
    return patterns + ([f"!src/d{i:03d}/**/*.lock"] if i == AGENTS - 1 else [])


_WORKTREES: dict[str, Path] = {}


def worktree(i: int) -> Path:
    """Agent a<i>'s worktree, where `git fleet-add` put it (the fleet's default place)."""
    if not _WORKTREES:
        listing = run.sh("git", "worktree", "list", "--porcelain", cwd=ROOT / "main")
        for block in listing.split("\n\n"):
            fields = dict(line.partition(" ")[::2] for line in block.splitlines())
            if fields.get("branch", "").startswith("refs/heads/fleet/"):
                _WORKTREES[fields["branch"][len("refs/heads/fleet/"):]] = Path(fields["worktree"])
    return _WORKTREES[f"a{i}"]


def build() -> Path:
    """The fleet: the benchmark repository's first commit (100,000 files) fetched from bench/run.py's
    repository, `git fleet-init`, and `git fleet-add a0..a9`, each with a worktree of its own."""
    main = ROOT / "main"
    if (ROOT / "ready").exists():
        return main
    source = run.generate(SIZE) / "main"
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)
    run.sh("git", "init", "-q", "-b", "main", str(main))
    run.sh("git", "fetch", "-q", "--no-tags", str(source), "main", cwd=main)
    first = run.sh("git", "rev-list", "--max-parents=0", "FETCH_HEAD", cwd=main).split()[0]
    run.sh("git", "reset", "-q", "--hard", first, cwd=main)
    run.sh("git", "config", "gc.auto", "0", cwd=main)
    run.sh("git", "fleet-init", cwd=main)
    for i in range(AGENTS):
        started = time.perf_counter()
        run.sh("git", "fleet-add", f"a{i}", *(x for p in zone(i) for x in ("--zone", p)), cwd=main)
        print(f"bench: agent a{i} added in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    (ROOT / "ready").write_text("the fleet of bench/agent_hook.py is complete\n")
    return main


# -- the hooks, as the agent's worktree has them ------------------------------------------------------

def settings_commands(wt: Path) -> dict[str, str]:
    """The fleet's command for each hook event in the worktree's .claude/settings.local.json."""
    path = wt / ".claude" / "settings.local.json"
    data = json.loads(path.read_text())
    found = {}
    for event, entries in data.get("hooks", {}).items():
        for entry in entries:
            for hook in entry.get("hooks", []):
                if MARKER in hook.get("command", ""):
                    found[event] = hook["command"]
    for event in ("PreToolUse", "PostToolUse", "Stop"):
        if event not in found:
            sys.exit(f"bench: {path} has no fleet {event} hook")
    return found


def fleet_gate_command() -> str | None:
    """The gate command the git-fleet on PATH writes (its hook_command), to tell stale settings."""
    script = os.path.realpath(shutil.which("git-fleet-add") or "")
    with open(script, "rb") as fh:
        first = fh.readline()
    if not first.startswith(b"#!"):
        return None
    python = first[2:].decode().strip()
    proc = subprocess.run([python, "-c", "from git_fleet.agent_settings import hook_command as h; "
                           "print(h('claude', 'gate'))"], cwd="/", capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def current_hooks(main: Path) -> None:
    """The worktrees' hooks are the git-fleet on PATH's: reinstalled by `git fleet-doctor --fix`
    when the repository was built by another."""
    expected = fleet_gate_command()
    if expected is None or all(settings_commands(worktree(i))["PreToolUse"] == expected for i in range(AGENTS)):
        return
    print("bench: the agents' hooks are another git-fleet's: git fleet-doctor --fix", file=sys.stderr)
    subprocess.run(["git", "fleet-doctor", "--fix"], cwd=main, capture_output=True, env=run.ENV)
    if any(settings_commands(worktree(i))["PreToolUse"] != expected for i in range(AGENTS)):
        sys.exit("bench: the agents' hooks are still another git-fleet's after git fleet-doctor --fix")


def python_of(command: str) -> tuple[str, str]:
    """(the hook's Python, the runner script) in a fleet hook command."""
    words = shlex.split(command.split(";")[0])
    k = words.index("-I")
    return words[k - 1], words[k + 2]


class Case:
    def __init__(self, name: str, command: str, wt: Path, payload: bytes, rc: int, agent: str | None = None,
                 cold: bool = False, decision: bool = False):
        self.name = name
        self.command = command
        self.wt = wt
        self.payload = payload
        self.rc = rc  # the exit status it must give: 0 allowed, 2 refused
        self.agent = agent  # whose events log it adds a line to (None: a no-op)
        self.cold = cold  # the zone cache removed before each call
        self.decision = decision  # a Write or Edit decision: must start no git
        self.env = {**run.ENV, "CLAUDE_PROJECT_DIR": str(wt)}
        self.times: list[float] = []
        self.cpu: list[float] = []  # user + sys of the call's processes
        self.last_cpu = 0.0
        self.programs = "n/a"
        self.gits = 0
        self.imports: tuple[float, int, list[tuple[float, str]]] | None = None


def payload(wt: Path, event: str, **fields: object) -> bytes:
    """A Claude Code hook payload: the fields every event has, and the event's own."""
    return json.dumps({"session_id": f"bench-{wt.name}", "transcript_path": f"/tmp/bench-{wt.name}.jsonl",
                       "cwd": str(wt), "permission_mode": "default", "hook_event_name": event, **fields}).encode()


def pre(wt: Path, tool: str, **tool_input: str) -> bytes:
    return payload(wt, "PreToolUse", tool_name=tool, tool_input=tool_input, tool_use_id="toolu_bench")


def cases(main: Path) -> list[Case]:
    wt, wt9 = worktree(0), worktree(AGENTS - 1)
    hooks, hooks9 = settings_commands(wt), settings_commands(wt9)
    gate = hooks["PreToolUse"]
    python, runner = python_of(gate)
    inzone = pre(wt, "Write", file_path=f"{wt}/src/d000/new-file.txt", content="x\n")
    noop_py = f"{shlex.quote(python)} -I -S -c {shlex.quote(NOOP_PY)}"
    wrapped = gate.replace(f"{shlex.quote(runner)} claude gate", f"-c {shlex.quote(NOOP_PY)}")
    if wrapped == gate:
        sys.exit(f"bench: cannot find the runner in the gate command: {gate}")
    return [
        Case("no-op hook: `cat >/dev/null`", "cat >/dev/null", wt, inzone, 0),
        Case("no-op Python hook: `PYTHON -I -S -c ...` reading stdin", noop_py, wt, inzone, 0),
        Case("no-op Python hook under the gate's `timeout` wrapper", wrapped, wt, inzone, 0),
        Case("gate: Write inside the zone", gate, wt, inzone, 0, "a0", decision=True),
        Case("gate: Write inside a zone with a wildcard (agent a9)", hooks9["PreToolUse"], wt9,
             pre(wt9, "Write", file_path=f"{wt9}/src/d009/new-file.txt", content="x\n"), 0, f"a{AGENTS - 1}",
             decision=True),
        Case("gate: Write outside the zone (refused)", gate, wt,
             pre(wt, "Write", file_path=f"{wt}/src/d001/f000001.txt", content="x\n"), 2, "a0", decision=True),
        Case("gate: Edit through `..` into the main worktree (refused)", gate, wt,
             pre(wt, "Edit", file_path=f"{wt}/src/d000/../../../main/.gitfleet.toml", old_string="a",
                 new_string="b"), 2, "a0", decision=True),
        Case("gate: Write into another agent's worktree (refused)", gate, wt,
             pre(wt, "Write", file_path=f"{worktree(1)}/src/d001/new-file.txt", content="x\n"), 2, "a0",
             decision=True),
        Case("gate: Bash `git commit -m x`", gate, wt,
             pre(wt, "Bash", command="git commit -m x", description="commit"), 0, "a0"),
        Case("event: PostToolUse (Write)", hooks["PostToolUse"], wt,
             payload(wt, "PostToolUse", tool_name="Write", tool_use_id="toolu_bench",
                     tool_input={"file_path": f"{wt}/src/d000/new-file.txt", "content": "x\n"},
                     tool_response={"filePath": f"{wt}/src/d000/new-file.txt", "success": True}), 0, "a0"),
        Case("event: Stop", hooks["Stop"], wt, payload(wt, "Stop", stop_hook_active=False), 0, "a0"),
        Case("gate: Write inside the zone, zone cache removed (cold)", gate, wt, inzone, 0, "a0", cold=True,
             decision=True),
    ]


# -- running them -------------------------------------------------------------------------------------

def zone_cache(main: Path) -> Path:
    return main / ".git" / "fleet" / "zones.cache"


def children_cpu() -> float:
    """ms of CPU (user + sys) that this process's waited-for children have used."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


def call(case: Case, command: str | None = None, env: dict[str, str] | None = None) -> tuple[float, int, bytes]:
    """One hook call as Claude Code makes it: ms, exit status, stderr (and its CPU time noted)."""
    cpu = children_cpu()
    start = time.perf_counter()
    proc = subprocess.run(["sh", "-c", command or case.command], cwd=case.wt, input=case.payload,
                          capture_output=True, env=env or case.env)
    elapsed = (time.perf_counter() - start) * 1000
    case.last_cpu = children_cpu() - cpu
    return elapsed, proc.returncode, proc.stderr


def checked(case: Case, rc: int, err: bytes) -> None:
    if rc != case.rc or (rc == 2 and case.agent and b"refused" not in err):
        sys.exit(f"bench: {case.name}: exit {rc}, expected {case.rc}:\n{err.decode(errors='replace')}")


def programs(case: Case, main: Path, tracer: str) -> None:
    """Which programs one call starts, by strace (execve that succeeded) or, without it, by a
    `git` first on PATH that logs its calls."""
    if case.cold:
        zone_cache(main).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="fleet-hook-trace-") as tmp:
        log = Path(tmp) / "log"
        if tracer == "strace":
            proc = subprocess.run(["strace", "-f", "-qq", "-e", "trace=execve", "-o", str(log), "sh", "-c",
                                   case.command], cwd=case.wt, input=case.payload, capture_output=True, env=case.env)
            checked(case, proc.returncode, proc.stderr)
            started = []
            for path, argv in re.findall(r'execve\("([^"]+)", \[(.*)\], .*\) = 0$', log.read_text(), re.MULTILINE):
                name = os.path.basename(path)
                sub = re.search(r'^"[^"]*", (?:"-[^"]*", )*"([^"-][^"]*)"', argv) if name == "git" else None
                started.append(f"git {sub.group(1)}" if sub else name)
        else:
            real = shutil.which("git", path=case.env.get("PATH"))
            (Path(tmp) / "git").write_text(f'#!/bin/sh\necho "$*" >> {shlex.quote(str(log))}\n'
                                           f'exec {shlex.quote(str(real))} "$@"\n')
            (Path(tmp) / "git").chmod(0o755)
            env = {**case.env, "PATH": f"{tmp}:{case.env.get('PATH', '')}"}
            _ms, rc, err = call(case, env=env)
            checked(case, rc, err)
            calls = log.read_text().splitlines() if log.exists() else []
            started = [" ".join(["git", *line.split()[:1]]) for line in calls]
    case.gits = sum(p.split()[0] == "git" for p in started)
    seen: dict[str, int] = {}
    for p in started:
        seen[p] = seen.get(p, 0) + 1
    case.programs = ", ".join(f"{p} x{n}" if n > 1 else p for p, n in seen.items()) or "no git"


def importtime(case: Case, main: Path, repeat: int = 5) -> None:
    """Python's import time in a call (`-X importtime`), of the median of `repeat` calls: the sum
    of the modules' self times, how many, the slowest ones."""
    if " -I -S " not in case.command:
        return
    found = []
    for _ in range(repeat):
        if case.cold:
            zone_cache(main).unlink(missing_ok=True)
        _ms, rc, err = call(case, case.command.replace(" -I -S ", " -X importtime -I -S ", 1))
        checked(case, rc, err)
        rows = re.findall(rb"^import time:\s+(\d+) \|\s+\d+ \|( *)(\S+)$", err, re.MULTILINE)
        self_ms = [(int(us) / 1000, name.decode()) for us, _indent, name in rows]
        found.append((sum(ms for ms, _ in self_ms), len(self_ms), sorted(self_ms, reverse=True)[:5]))
    case.imports = sorted(found, key=lambda f: f[0])[len(found) // 2]


def event_lines(main: Path) -> dict[str, list[bytes]]:
    out = {}
    for i in range(AGENTS):
        try:
            out[f"a{i}"] = (main / ".git" / "fleet" / "agents" / f"a{i}" / "events").read_bytes().splitlines()
        except FileNotFoundError:
            out[f"a{i}"] = []
    return out


def lost(before: dict[str, list[bytes]], after: dict[str, list[bytes]], expected: dict[str, int]) -> str:
    """'' when every agent's log grew by exactly the calls made for it, each line whole JSON."""
    problems = []
    for agent, lines in after.items():
        new = lines[len(before[agent]):]
        if len(new) != expected.get(agent, 0):
            problems.append(f"{agent}: {len(new)} new event lines, {expected.get(agent, 0)} calls")
        for line in new:
            try:
                json.loads(line)
            except ValueError:
                problems.append(f"{agent}: a torn event line {line[:60]!r}")
                break
    return "; ".join(problems)


def burst(jobs: list[tuple[Case, bytes]]) -> tuple[float, list[float], float]:
    """All jobs started at once (released by a barrier), one thread waiting on each: the burst's
    wall time, each call's, and the CPU time of all of them."""
    barrier = threading.Barrier(len(jobs) + 1)
    out: list[tuple[float, int, bytes] | None] = [None] * len(jobs)

    def go(k: int) -> None:
        case, data = jobs[k]
        barrier.wait()
        start = time.perf_counter()
        proc = subprocess.run(["sh", "-c", case.command], cwd=case.wt, input=data, capture_output=True, env=case.env)
        out[k] = ((time.perf_counter() - start) * 1000, proc.returncode, proc.stderr)

    threads = [threading.Thread(target=go, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    cpu = children_cpu()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = (time.perf_counter() - start) * 1000
    cpu = children_cpu() - cpu
    for (case, _), result in zip(jobs, out, strict=True):
        assert result is not None
        checked(case, result[1], result[2])
    return wall, [r[0] for r in out if r is not None], cpu


# -- the table ------------------------------------------------------------------------------------

def p90(times: list[float]) -> float:
    return statistics.quantiles(times, n=10)[-1] if len(times) > 1 else times[0]


def row(name: str, times: list[float], cpu: list[float], rc: str, noop: float | None, programs: str,
        target: bool = True) -> str:
    med, high = statistics.median(times), p90(times)
    verdict = "n/a" if not target else ("yes" if high < TARGET_MS else "median only" if med < TARGET_MS else "no")
    over = f"{med - noop:+.1f}" if noop is not None else "n/a"
    return (f"| {name} | {rc} | {med:.1f} | {high:.1f} | {min(times):.1f}-{max(times):.1f} | {over} | "
            f"{statistics.median(cpu):.1f} | {verdict} | {programs} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=50, help="timed calls per case (default 50)")
    ap.add_argument("--out", type=Path, help="also write the table to this file")
    ap.add_argument("--no-strace", action="store_true", help="find the git a hook starts with a logging `git` "
                    "first on PATH, even where strace is installed")
    args = ap.parse_args()
    if shutil.which("git-fleet-add") is None:
        sys.exit("bench: git-fleet is not on PATH (run ./install.sh, or pip install -e . in a venv)")
    began = time.perf_counter()
    main_dir = build()
    current_hooks(main_dir)
    print(f"bench: fleet of {AGENTS} agents on {SIZE:,} files ready in {time.perf_counter() - began:.1f}s",
          file=sys.stderr)
    all_cases = cases(main_dir)
    tracer = "strace" if not args.no_strace and shutil.which("strace") and subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=execve", "-o", "/dev/null", "true"], capture_output=True).returncode == 0 \
        else "a logging git wrapper first on PATH"
    for case in all_cases:  # (also a first, untimed call of each: the warm-up)
        programs(case, main_dir, tracer)
        importtime(case, main_dir)
    os.sync()

    # sequential calls, interleaved: one call of every case per round, the order rotated each round
    load_before = os.getloadavg()[0]
    before = event_lines(main_dir)
    expected: dict[str, int] = {}
    for r in range(args.runs + 1):
        k = r % len(all_cases)
        for case in all_cases[k:] + all_cases[:k]:
            if case.cold:
                zone_cache(main_dir).unlink(missing_ok=True)
            ms, rc, err = call(case)
            checked(case, rc, err)
            if case.agent:
                expected[case.agent] = expected.get(case.agent, 0) + 1
            if r:
                case.times.append(ms)
                case.cpu.append(case.last_cpu)
    sequential_lost = lost(before, event_lines(main_dir), expected)

    # 10 at once: one per agent's worktree, and 10 parallel tool calls in one worktree
    gate = all_cases[3]
    per_agent = []
    for i in range(AGENTS):
        wt = worktree(i)
        c = Case(f"a{i}", settings_commands(wt)["PreToolUse"], wt, b"", 0, f"a{i}")
        per_agent.append((c, pre(wt, "Write", file_path=f"{wt}/src/d{i:03d}/new-file.txt", content="x\n")))
    same_agent = [(gate, gate.payload)] * AGENTS
    bursts: dict[str, tuple[list[float], list[float], list[float], str]] = {}
    for label, jobs in ((f"{AGENTS} agents' gates at once (Write inside each zone)", per_agent),
                        (f"{AGENTS} gates at once in one agent's worktree (parallel tool calls)", same_agent)):
        before = event_lines(main_dir)
        expected = {}
        walls: list[float] = []
        calls: list[float] = []
        cpus: list[float] = []
        for r in range(args.runs + 1):
            wall, each, cpu = burst(jobs)
            for case, _ in jobs:
                expected[case.agent or ""] = expected.get(case.agent or "", 0) + 1
            if r:
                walls.append(wall)
                calls += each
                cpus.append(cpu)
        bursts[label] = (walls, calls, cpus, lost(before, event_lines(main_dir), expected))

    noop_py = statistics.median(all_cases[1].times)
    version = subprocess.run([python_of(gate.command)[0], "-V"], capture_output=True, text=True).stdout.strip()
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
        f"{run.sh('git', '--version').strip()}; hooks' {version}.",
        f"The hooks: {gate.command.split(';')[0]} ... (from {worktree(0)}/.claude/settings.local.json).",
        f"Target: under {TARGET_MS:.0f} ms per call, whole process (sh, timeout, Python, the decision, the event line).",
        "",
        "| hook call (sh -c, JSON on stdin) | exit | median | p90 | min-max | over no-op Python | CPU | p90 under "
        f"{TARGET_MS:.0f} ms | programs started ({'strace' if tracer == 'strace' else 'git wrapper'}) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case in all_cases:
        lines.append(row(case.name, case.times, case.cpu, str(case.rc), None if case.agent is None else noop_py,
                         case.programs))
    for label, (walls, calls, cpus, _) in bursts.items():
        lines.append(row(f"{label}: each call", calls, [c / AGENTS for c in cpus], "0", noop_py, "as above"))
        lines.append(row(f"{label}: the whole burst (wall)", walls, cpus, "0", None, "", target=False))
    lines += ["", f"Milliseconds over {args.runs} timed calls per case ({args.runs} bursts of {AGENTS}), after one "
              "untimed call of each; 'over no-op Python' is the median less the bare no-op Python hook's; CPU is "
              "the median user + sys time of the call's processes (of a burst: its total, and that over "
              f"{AGENTS} per call), which other load on the machine disturbs less than wall time."]
    decisions = [c for c in all_cases if c.decision and not c.cold]
    gits = sum(c.gits for c in decisions)
    lines.append(f"Git started by a Write or Edit decision (warm zone cache): {gits} "
                 f"({'strace -f -e trace=execve' if tracer == 'strace' else tracer}); with the cache removed: "
                 f"{all_cases[-1].gits}.")
    lines.append("Event lines: " + "; ".join(
        [f"sequential calls: {sequential_lost or 'none lost'}"]
        + [f"{label}: {bad or 'none lost or torn'}" for label, (_, _, _, bad) in bursts.items()]) + ".")
    for case in all_cases:
        if case.imports:
            total, n, top = case.imports
            lines.append(f"Imports, {case.name}: {total:.1f} ms self time over {n} modules (-X importtime); slowest: "
                         + ", ".join(f"{name} {ms:.1f}" for ms, name in top) + ".")
    lines.append(f"The whole run took {(time.perf_counter() - began) / 60:.1f} minutes; load average "
                 f"{load_before:.1f} before the timed calls, {os.getloadavg()[0]:.1f} after them.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 1 if sequential_lost or any(bad for _, _, _, bad in bursts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
