"""git fleet-demo: the whole practice in a minute, on a small project of its own, with stand-in agents.

It builds a project under DIR, sets up a fleet on it with the public commands (init, three agents
with zones, a checkpoint with its test, tasks on the bus), runs three stand-in agents at once
(standin.py: scripted programs that use the fleet as a coding agent does; one strays outside
its zone and is refused by the commit hook), then shows the status with its forecast and merges
the checkpoint. Everything it makes lives under DIR; nothing is left running.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from . import runner
from .errors import FleetError, UsageError

AGENTS_TIMEOUT = 300  # seconds the stand-ins may take together: they take a few
PROJECT = {
    "README.md": "# shop\n\nA small shop: an API, a web client and its docs.\n",
    "src/api/__init__.py": "",
    "src/api/orders.py": ('"""Orders."""\n\n\ndef lines(order):\n'
                          '    return [(item["name"], item["price"] * item["qty"]) for item in order]\n'),
    "src/web/cart.js": "export function cart(order) {\n  return order.map(item => item.name);\n}\n",
    "src/web/index.html": "<!doctype html>\n<title>shop</title>\n<main id=\"cart\"></main>\n",
    "docs/guide.md": "# Guide\n\nOrders are lists of items with a name, a price and a quantity.\n",
    "tests/__init__.py": "",
    "tests/test_orders.py": ("import unittest\n\nfrom src.api.orders import lines\n\n\n"
                             "class Orders(unittest.TestCase):\n    def test_lines(self):\n"
                             "        self.assertEqual(lines([{\"name\": \"tea\", \"price\": 3, \"qty\": 2}]), "
                             "[(\"tea\", 6)])\n"),
    ".gitignore": "__pycache__/\n",
}

# (agent, zone, task title, the stand-in's plan for it)
AGENTS = [
    ("api", ["src/api/**", "tests/**"], "Orders: add the total", {
        "edits": {"src/api/orders.py": PROJECT["src/api/orders.py"] + (
            "\n\ndef total(order):\n    return sum(price for _, price in lines(order))\n"),
                  "tests/test_total.py": ("import unittest\n\nfrom src.api.orders import total\n\n\n"
                                          "class Total(unittest.TestCase):\n    def test_total(self):\n"
                                          "        self.assertEqual(total([{\"name\": \"tea\", \"price\": 3, "
                                          "\"qty\": 2}, {\"name\": \"jam\", \"price\": 4, \"qty\": 1}]), 10)\n")},
        "message": "orders: the order's total", "result": "total(order) added in src/api/orders.py, with a test"}),
    ("web", ["src/web/**"], "Cart page: show the total", {
        "edits": {"src/web/cart.js": PROJECT["src/web/cart.js"] + (
            "\nexport function total(order) {\n  return order.reduce((sum, item) => sum + item.price * item.qty, 0);\n}\n"),
                  "src/web/index.html": PROJECT["src/web/index.html"] + "<p id=\"total\"></p>\n"},
        "message": "cart: show the total", "result": "the cart page shows the total (src/web/cart.js, index.html)"}),
    ("docs", ["docs/**"], "Guide: document the total", {
        # it strays: it also "fixes" the web page's title, which is web's; the hook refuses it
        "edits": {"docs/guide.md": PROJECT["docs/guide.md"] + "\nAn order's total is the sum of its lines.\n",
                  "src/web/index.html": PROJECT["src/web/index.html"].replace("<title>shop", "<title>Shop")},
        "message": "guide: the order's total", "result": "docs/guide.md explains the total"}),
]


@dataclass
class Outcome:
    """What the demo did, for --json and for its last words."""
    dir: str
    repo: str
    seconds: float = 0.0
    agents: dict[str, int] = field(default_factory=dict)  # agent -> its stand-in's exit status
    refused: list[str] = field(default_factory=list)  # the refusals the agents saw
    merged: bool = False
    tag: str | None = None


class Demo:
    def __init__(self, where: Path, *, tmux: bool, keep: bool, say: Callable[[str], None], pace: float = 0.3):
        self.dir, self.tmux, self.keep, self.say, self.pace = where, tmux, keep, say, pace
        self.repo = where / "shop"
        self.bin = Path(sys.executable).parent  # the git-fleet-* commands, beside the Python that runs this
        self.env = {**os.environ, "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}", "NO_COLOR": "1"}
        for var in [v for v in self.env if v.startswith(("FLEET_", "GIT_")) or v == "TMUX"]:
            del self.env[var]  # (started from an agent's session or a hook, it is still the person's demo)
        self.procs: list[subprocess.Popen[str]] = []
        self.tmux_dir: Path | None = None
        self.step = "starting"  # what it is doing, for an interrupt's message
        self.out = Outcome(str(where), str(self.repo))

    # -- running the public commands ----------------------------------------------------------------

    def run(self, *args: str, show: bool = True, ok: bool = True, cwd: Path | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        if show:
            self.say("$ " + " ".join(shlex.quote(a) for a in args))
        proc = subprocess.run(list(args), cwd=cwd or self.repo, env=self.env, capture_output=True, text=True,
                              input=input)
        if show and proc.returncode == 0:
            self._show(proc)
        if ok and proc.returncode != 0:
            said = [line.removeprefix("error: ").removeprefix("hint: ")
                    for line in (proc.stderr or proc.stdout).strip().splitlines()] or ["(it said nothing)"]
            raise FleetError(f"the demo stopped: `{' '.join(args)}` failed: " + "; ".join(said[:4]),
                             f"what it made so far is in {self.dir} (rm -rf {shlex.quote(str(self.dir))} removes it)")
        return proc

    # -- the steps ----------------------------------------------------------------------------------

    def build(self) -> None:
        self.step = "building the project"
        self.say(f"a small project, shop, in {self.repo}: src/api, src/web, docs and a test suite")
        try:
            self.repo.mkdir(parents=True)
            for path, text in PROJECT.items():
                (self.repo / path).parent.mkdir(parents=True, exist_ok=True)
                (self.repo / path).write_text(text, encoding="utf-8")
        except OSError as e:
            raise FleetError(f"cannot make the demo's project in {self.dir}: {e.strerror}",
                             "give the demo a directory it can write: git fleet-demo DIR") from None
        self.run("git", "init", "-q", "-b", "main", show=False)
        # settings of its own, whatever the person's global ones say: an identity (where git has
        # none), no signing (no gpg prompt for three agents at once), and its own hooks (a global
        # core.hooksPath would bypass the zone check the demo is about)
        for key, value in (("user.name", "git-fleet demo"), ("user.email", "demo@git-fleet.invalid"),
                           ("commit.gpgSign", "false"), ("tag.gpgSign", "false"),
                           ("core.hooksPath", str(self.repo / ".git" / "hooks"))):
            self.run("git", "config", key, value, show=False)
        self.run("git", "add", "-A", show=False)
        self.run("git", "commit", "-q", "-m", "shop: an API, a web client, docs and tests", show=False)

    def set_up(self) -> None:
        self.step = "setting up the fleet"
        self.say("")
        self.say("set up the fleet, as you would: three agents, each with a worktree, a branch and a zone")
        self.run("git", "fleet-init")
        for name, zone, _title, _plan in AGENTS:
            self.run("git", "fleet-add", name, *[a for z in zone for a in ("--zone", z)])
        # python3 where the person's PATH has one (their later merges run it too), else this Python
        test = f"{'python3' if shutil.which('python3') else shlex.quote(sys.executable)} -m unittest -q"
        self.run("git", "fleet-checkpoint", "add", "demo", *[a for n, *_ in AGENTS for a in ("--agent", n)],
                 "--test", test)
        self.say("")
        self.say("work for them on the bus (tasks/), one task each")
        for name, _zone, title, plan in AGENTS:
            self.run("git", "fleet-task", "add", title, "--agent", name)
            where = self.worktree(name)
            (where / ".fleet").mkdir(exist_ok=True)
            (where / ".fleet" / "plan.json").write_text(json.dumps({"tasks": [plan]}), encoding="utf-8")
        command = f"{shlex.quote(sys.executable)} -m git_fleet.standin .fleet/plan.json --pace {self.pace}"
        for name, *_ in AGENTS:
            self.run("git", "fleet-set", name, "--command", command, "--resume", command, show=False)
        self.say("")
        self.say("commit the fleet's configuration, as git fleet-init says (other clones and a server read it)")
        self.run("git", "add", ".gitfleet.toml")
        self.run("git", "commit", "-q", "-m", "fleet: three agents, their zones and a checkpoint")

    def worktree(self, name: str) -> Path:
        return self.dir / f"shop-{name}"

    def agents(self) -> None:
        self.step = "running the agents"
        self.say("")
        self.say("three stand-in agents start at once: scripted programs that work as a coding agent does,")
        self.say("reading the brief, claiming a task, editing, committing and writing a result")
        if self.tmux:
            self._agents_in_tmux()
        else:
            self._agents_as_processes()

    def _agents_as_processes(self) -> None:
        width = max(len(n) for n, *_ in AGENTS)
        threads = []
        lock = threading.Lock()
        for name, *_ in AGENTS:
            proc = subprocess.Popen(["git", "fleet-run", name, "--", sys.executable, "-m", "git_fleet.standin",
                                     ".fleet/plan.json", "--pace", str(self.pace)],
                                    cwd=self.repo, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, start_new_session=True)
            self.procs.append(proc)

            def relay(proc: subprocess.Popen[str] = proc, name: str = name) -> None:
                assert proc.stdout is not None
                for line in proc.stdout:
                    with lock:
                        self._heard(name, line.rstrip("\n"), width)

            t = threading.Thread(target=relay, daemon=True)
            t.start()
            threads.append(t)
        deadline = time.monotonic() + AGENTS_TIMEOUT
        for (name, *_), proc, t in zip(AGENTS, self.procs, threads, strict=True):
            try:
                self.out.agents[name] = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise FleetError(f"the demo stopped: stand-in agent '{name}' did not finish within "
                                 f"{AGENTS_TIMEOUT} s", f"see .fleet/standin.log in {self.worktree(name)}") from None
            t.join()
        self.procs = []

    def _heard(self, name: str, line: str, width: int) -> None:
        self.say(f"  {name.ljust(width)} | {line}")
        if line.startswith("the commit hook refused"):
            self.out.refused.append(f"{name}: {line}")

    def _agents_in_tmux(self) -> None:
        self.tmux_dir = self.dir / ".tmux"
        if len(str(self.tmux_dir)) > 80:  # a socket's path is limited (108 bytes, tmux-UID/default in it)
            self.tmux_dir = Path(tempfile.mkdtemp(prefix="fleet-demo-tmux-"))
        self.tmux_dir.mkdir(exist_ok=True)
        self.env["TMUX_TMPDIR"] = str(self.tmux_dir)  # a tmux server of its own
        self.env.pop("TMUX", None)
        self.run("git", "fleet-up", "--detach", "--stagger", "0")
        width = max(len(n) for n, *_ in AGENTS)
        seen = {name: 0 for name, *_ in AGENTS}
        deadline = time.monotonic() + AGENTS_TIMEOUT
        while True:
            if time.monotonic() > deadline:
                raise FleetError(f"the demo stopped: the stand-in agents did not finish within {AGENTS_TIMEOUT} s",
                                 f"see .fleet/standin.log in their worktrees under {self.dir}")
            for name in seen:
                log = self.worktree(name) / ".fleet" / "standin.log"
                lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
                for line in lines[seen[name]:]:
                    self._heard(name, line, width)
                seen[name] = len(lines)
            ps = json.loads(self.run("git", "fleet-ps", "--json", show=False).stdout)
            if not any(row.get("running") for row in ps):
                break
            time.sleep(0.2)
        for row in ps:
            self.out.agents[row["agent"]] = 0 if "finished: nothing left for me" in (
                self.worktree(row["agent"]) / ".fleet" / "standin.log").read_text(encoding="utf-8") else 1

    def merge(self) -> None:
        self.step = "merging the checkpoint"
        self.say("")
        self.say("every agent has finished; what is coming (every pair merged in memory: a conflict shows here)")
        self.run("git", "fleet-status")
        self.say("no two agents changed the same file, so nothing would conflict. Had web and docs both")
        self.say("changed src/web/index.html, it would list 'would conflict if merged now: web and docs:")
        self.say("src/web/index.html', and the checkpoint would refuse to move main at all.")
        self.say("")
        self.say("the checkpoint: all three merged in memory, the test run on the result, then main moves once")
        self.run("git", "fleet-merge", "--checkpoint", "demo", "-v")
        self.out.merged = True
        self.out.tag = "fleet/demo"
        self.say("its test (python -m unittest: the api's tests, the agent's new one included) passed on the")
        self.say("merged result before main moved; its output is in .git/fleet/checkpoint-test.log")
        self.run("git", "log", "--oneline", "--graph", "-8", "main")
        self.say("")
        self.say("the bus, as the orchestrator sees it, and committed (the claims stay out)")
        self.run("git", "fleet-plan")
        self.run("git", "add", "tasks", "results", "master_plan.md")
        self.run("git", "commit", "-q", "-m", "bus: tasks and results of the first round")

    def _show(self, proc: subprocess.CompletedProcess[str]) -> None:
        for line in (proc.stdout + proc.stderr).splitlines():
            self.say("  " + line)

    def epilogue(self) -> None:
        rel = os.path.relpath(self.repo)
        self.say("")
        self.say(f"done in {self.out.seconds:.0f} s. Look around:")
        self.say(f"  cd {shlex.quote(rel)} && git log --graph --oneline --all   # the agents' branches and the merges")
        self.say("  cat master_plan.md; ls tasks results                     # the bus")
        self.say("  cat .git/fleet/checkpoints.log                           # the checkpoint's log")
        self.say("  (there, the agents' command is the stand-in: give them a real one before git fleet-up)")
        if shutil.which("git-fleet-status", path=os.environ.get("PATH")) is None:
            self.say(f"the commands are in {self.bin}; for the next steps: export PATH=\"{self._user_bin()}:$PATH\"")
        self.say("with a real agent, in your own repository: git fleet-init, git fleet-add NAME --zone 'PATTERN',")
        self.say("then git fleet-up --trust: each agent runs Claude Code, kept to its zone at every edit by its hooks")
        self.say("(for codex, gemini or aider: git help fleet-set; what the hooks hold: man git-fleet-agents)")

    def _user_bin(self) -> str:
        """Where the person's git-fleet-* commands are: the directory they started this from."""
        started = Path(sys.argv[0])
        return str(started.parent.resolve() if started.parent != Path("") else self.bin)

    # -- the whole demo -----------------------------------------------------------------------------

    def go(self) -> Outcome:
        start = time.monotonic()
        try:
            self.build()
            self.set_up()
            self.agents()
            bad = [n for n, code in self.out.agents.items() if code != 0]
            if bad:
                raise FleetError(f"the demo stopped: stand-in agent(s) {', '.join(bad)} failed",
                                 f"see .fleet/standin.log in their worktrees under {self.dir}")
            self.merge()
        finally:
            self.stop()
        self.out.seconds = time.monotonic() - start
        return self.out

    def stop(self, interrupted: bool = False) -> None:
        """End what the demo started: the stand-ins (with what they started), its tmux server
        (kept with --keep, unless the demo was interrupted: then its agents go too)."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):  # (it ended meanwhile: nothing to stop)
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        self.procs = []
        if self.tmux_dir is not None and (interrupted or not self.keep):
            subprocess.run(["tmux", "kill-server"], env=self.env, capture_output=True)
            shutil.rmtree(self.tmux_dir, ignore_errors=True)
            self.tmux_dir = None

    def attach_hint(self) -> str | None:
        """How to reach the tmux server --keep kept, and how to end it."""
        if self.tmux_dir is None:
            return None
        at = shlex.quote(str(self.tmux_dir))
        return f"its tmux server runs on: attach with TMUX_TMPDIR={at} tmux attach; end it with TMUX_TMPDIR={at} tmux kill-server"


def require_tmux() -> None:
    """For --tmux: refused, before anything is made, where tmux is not installed."""
    if shutil.which("tmux") is None:
        raise UsageError("--tmux needs tmux, which is not installed", "run the demo without --tmux")


def signals_as_interrupt() -> AbstractContextManager[None]:
    """While it lasts, a closed terminal (SIGHUP) or a kill (SIGTERM) ends the demo as Ctrl-C
    does: a KeyboardInterrupt, so that it stops its agents and says where its files are."""
    return runner.raising_on_signals(lambda signum: KeyboardInterrupt())


def check_dir(where: Path) -> None:
    try:
        taken = where.exists() and (not where.is_dir() or any(where.iterdir()))
    except OSError as e:
        raise UsageError(f"cannot use {where}: {e.strerror}", "give the demo a new directory: git fleet-demo DIR") from None
    if taken:
        raise UsageError(f"{where} exists and is not empty", "give the demo a new directory: git fleet-demo DIR")
    parent = where
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot make {where}: {parent} is " + ("not a directory" if not parent.is_dir() else
                                                                "not writable"),
                         "give the demo a directory it can write: git fleet-demo DIR")
    if subprocess.run(["git", "--version"], capture_output=True).returncode != 0:
        raise FleetError("git is not installed", "install git 2.38 or newer")
