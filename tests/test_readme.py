"""The README's command blocks, run as printed: every `$ ` line of a ```console block is typed
into a real terminal (bash in a pseudo-terminal, NO_COLOR set, as a user at a keyboard runs it)
and what it prints is compared with the lines the README shows under it.

Normalised before comparing, because they differ from run to run: commit hashes (7 to 40 hex
digits), ages ("41 s ago", "2 min ago"), runs of spaces and tabs (table columns widen with them),
the directory the tour runs in (shown as /tmp/tour and /tmp/tour2), and git's own colours (git
does not follow NO_COLOR); git's pager is `cat`.

Not run, and why:
- lines on another machine (`box$ `) and the blocks that need a live agent CLI (`git fleet-up`,
  `git fleet-ps` with agents running: the sessions are tested in test_tmux.py), or a remote host
  (the teleport block: test_teleport.py runs the same commands between clones);
- the first screen's install line (`/path/to/your/repo`): test_project.py runs install.sh.
Between blocks, the test does what the README's prose says happened (an agent edits and
commits); those steps are in `between` below, each with the prose it stands for.
"""

from __future__ import annotations

import json
import os
import re
import select
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from git_fleet.sandbox import support
from helpers import Sandbox


def _sandbox_missing() -> str | None:
    return support().missing()

README = Path(__file__).resolve().parent.parent / "README.md"
SKIP = ("git fleet-up", "git fleet-ps", "git fleet-down")  # a live agent CLI in tmux


def blocks(section: str) -> list[list[tuple[str, list[str]]]]:
    """The ```console blocks of a `## section` of the README: each a list of (command, output lines)."""
    text = README.read_text(encoding="utf-8")
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    found = []
    for block in re.findall(r"```console\n(.*?)```", body, re.S):
        steps: list[tuple[str, list[str]]] = []
        current: list[str] | None = None
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], current := []))
            elif re.match(r"\w+\$ ", line):
                current = None  # another machine's prompt (box$): not run here, nor its output
            elif current is not None:
                current.append(line)
        found.append(steps)
    return found


def normal(lines: list[str], root: Path, shown: str) -> list[str]:
    out = []
    for line in lines:
        line = re.sub(r"\x1b(\[[0-9;?]*[A-Za-z]|[=>])", "", line)  # git's own colours (it ignores NO_COLOR)
        line = line.replace(str(root), shown)
        line = re.sub(r"\b[0-9a-f]{7,40}\b", "HASH", line)
        line = re.sub(r"\b\d+ (s|min|h|d|days?|months?|years?) ago\b", "AGE", line)
        line = re.sub(r"\s+", " ", line).strip()
        if line:
            out.append(line)
    return out


class Terminal:
    """bash in a pseudo-terminal, one command at a time, remembering its directory (`cd`)."""

    def __init__(self, sb: Sandbox, cwd: Path, patience: float = 120, env: dict[str, str] | None = None):
        self.sb, self.cwd, self.patience, self.env = sb, cwd, patience, env or {}

    def type(self, command: str) -> tuple[int, list[str]]:
        import pty

        # the command without its comment (`# prints the id first`), as bash reads it anyway
        marker = self.cwd.parent / ".cwd"
        script = f"{command}\nrc=$?\npwd > {marker}\nexit $rc\n"
        master, slave = pty.openpty()
        env = {**os.environ, "NO_COLOR": "1", "TERM": "xterm", "COLUMNS": "100", "GIT_PAGER": "cat", **self.env}
        env.pop("TMUX", None)
        proc = self.sb.spawn(["bash", "--norc", "--noprofile", "-c", script], cwd=self.cwd, env=env,
                             stdin=slave, stdout=slave, stderr=slave)
        os.close(slave)
        out = b""
        deadline = time.time() + self.patience  # a command that waits for the keyboard fails the test, not hangs it
        while True:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.time()))
            if not ready:
                self.sb.kill_group(proc)
                os.close(master)
                raise AssertionError(f"$ {command} did not finish (waiting for input?):\n{out.decode(errors='replace')}")
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        os.close(master)
        code = proc.wait(timeout=120)
        self.cwd = Path(marker.read_text().strip())
        return code, out.decode("utf-8", "replace").replace("\r\n", "\n").splitlines()


def run_block(term: Terminal, steps: list[tuple[str, list[str]]], root: Path, shown: str,
              between: dict[str, Callable[[Path], None]]) -> None:
    for command, printed in steps:
        if command.startswith(SKIP):
            continue
        if command in between:
            between[command](term.cwd)
        code, got = term.type(command)
        want = normal(printed, root, shown)
        assert normal(got, root, shown) == want, f"$ {command}\n" + "\n".join(got)
        if not any(line.startswith("error:") for line in want):
            assert code == 0, f"$ {command} exited {code}:\n" + "\n".join(got)


def make_shop(sb: Sandbox, where: Path) -> Path:
    """The tour's repository: `shop`, with src/api, src/web, docs and a `make test`."""
    where.mkdir()
    shop = where / "shop"
    sb.make_repo({"src/api/orders.py": "def orders(): pass\n", "src/web/cart.js": "cart()\n",
                  "src/web/README.md": "# web\n", "docs/guide.md": "# guide\n",
                  "Makefile": "test:\n\t@true\n", "README.md": "# shop\n"}, shop)
    return shop


@pytest.mark.skipif(not os.path.exists("/usr/bin/make") and not os.path.exists("/bin/make"),
                    reason="the tour's checkpoint test is `make test`")
def test_the_tour_works_as_printed(sandbox: Sandbox) -> None:
    sb = sandbox
    shop = make_shop(sb, sb.root / "tour")
    term = Terminal(sb, shop)
    tour = blocks("A two-minute tour")
    assert len(tour) == 4 and tour[0][0][0] == "git fleet-init"

    def agents_work(api: Path) -> None:
        """"When one strays outside its zone": the api agent edits its file and web's; the others
        commit their own work meanwhile."""
        (api / "src/api/orders.py").write_text("def orders(): pass\ndef put_order(): pass\n")
        (api / "src/web/cart.js").write_text("cart(total)\n")
        sb.commit(shop.parent / "shop-web", {"src/web/cart.js": "cart(with_total)\n"}, "cart: show the total")
        sb.commit(shop.parent / "shop-docs", {"docs/guide.md": "# guide\n\nOrders can be changed.\n"}, "docs: orders")

    between = {"git commit -qam 'orders: add PUT'": agents_work}
    for block in tour:
        run_block(term, block, shop.parent, "/tmp/tour", between)
    # what the tour promises at its end: the base has the three merges, and every agent has it
    assert sb.git("log", "--format=%s", "-3", "--first-parent", "main", cwd=shop).out.splitlines() == [
        "Merge fleet/docs (agent docs, checkpoint v1)", "Merge fleet/web (agent web, checkpoint v1)",
        "Merge fleet/api (agent api, checkpoint v1)"]
    for agent in ("api", "web", "docs"):
        assert sb.git("merge-base", "--is-ancestor", "main", f"fleet/{agent}", cwd=shop, ok=None).code == 0


def test_the_bus_blocks_work_as_printed(sandbox: Sandbox) -> None:
    sb = sandbox
    shop = make_shop(sb, sb.root / "tour2")
    sb.run(["git", "fleet-init"], cwd=shop)
    sb.run(["git", "fleet-add", "api", "--zone", "src/api/**"], cwd=shop)
    term = Terminal(sb, shop)
    first, second = blocks("The coordination bus")[:2]
    run_block(term, first, shop.parent, "/tmp/tour2", {})
    term.cwd = shop  # the second block is the orchestrator's, in the main worktree
    run_block(term, second, shop.parent, "/tmp/tour2", {})
    assert not list((shop / "tasks").glob("task-005-*"))


def test_the_checkpoint_block_works_as_printed(sandbox: Sandbox) -> None:
    """The state the block starts from, made as its agents would make it: api two commits ahead,
    web one (and a file it has not committed), docs one that touches web's README (docs owns
    the READMEs too, by an overlap the person allowed)."""
    sb = sandbox
    shop = make_shop(sb, sb.root / "tour3")
    sb.run(["git", "fleet-init"], cwd=shop)
    sb.run(["git", "fleet-add", "api", "--zone", "src/api/**"], cwd=shop)
    sb.run(["git", "fleet-add", "web", "--zone", "src/web/**"], cwd=shop)
    sb.run(["git", "fleet-add", "docs", "--zone", "docs/**", "--zone", "src/web/README.md", "--allow-overlap"], cwd=shop)
    cfg = shop / ".gitfleet.toml"
    cfg.write_text(cfg.read_text() + '\n[checkpoints.phase-1]\nagents = ["api", "web"]\n')
    api, web, docs = (shop.parent / f"shop-{a}" for a in ("api", "web", "docs"))
    sb.commit(api, {"src/api/orders.py": "def orders(): return []\n"}, "orders: list")
    sb.commit(api, {"src/api/refunds.py": "def refund(): pass\n"}, "refunds")
    sb.commit(web, {"src/web/README.md": "# web\n\nThe cart page.\n"}, "web: readme")
    (web / "src/web/wip.js").write_text("work in progress\n")
    sb.commit(docs, {"src/web/README.md": "# web\n\nSee docs/guide.md.\n"}, "docs: link the guide")
    [block] = blocks("Checkpoint merges")
    run_block(Terminal(sb, shop), block, shop.parent, "/tmp/tour3", {})
    assert sb.git("describe", "--tags", "main", cwd=shop).out.strip() == "fleet/phase-1"


@pytest.mark.skipif(_sandbox_missing() is not None, reason=f"no sandbox on this system: {_sandbox_missing()}")
def test_the_sandbox_block_works_as_printed(sandbox: Sandbox) -> None:
    sb = sandbox
    shop = make_shop(sb, sb.root / "tour4")
    sb.run(["git", "fleet-init"], cwd=shop)
    sb.run(["git", "fleet-add", "api", "--zone", "src/api/**"], cwd=shop)
    [block] = blocks("Sandboxed agents")
    run_block(Terminal(sb, shop), block, shop.parent, "/tmp/tour4", {})
    assert (shop / ".gitfleet.toml").read_text().count("sandbox = true") == 1


def test_the_sessions_and_teleport_blocks_work_as_printed(sandbox: Sandbox) -> None:
    """What of them runs on one machine without a live agent CLI: the settings, and the push
    (to a bare remote standing in for `origin`; the other machine's lines are test_teleport's)."""
    sb = sandbox
    shop = make_shop(sb, sb.root / "home")
    hub = sb.root / "hub.git"
    sb.git("init", "-q", "--bare", str(hub), cwd=sb.root)
    sb.git("remote", "add", "origin", str(hub), cwd=shop)
    sb.git("push", "-q", "origin", "main", cwd=shop)
    sb.run(["git", "fleet-init"], cwd=shop)
    sb.run(["git", "fleet-add", "api", "--zone", "src/api/**"], cwd=shop)
    sb.run(["git", "fleet-add", "web", "--zone", "src/web/**"], cwd=shop)
    [sessions] = blocks("Sessions in tmux")
    run_block(Terminal(sb, shop), sessions, shop.parent, "/home/me", {})
    agents = {a["agent"]: a for a in json.loads(sb.run(["git", "fleet-list", "--json"], cwd=shop).out)}
    assert set(agents) == {"api", "web"}
    text = (shop / ".gitfleet.toml").read_text()
    assert 'model = "opus"' in text and "command = \"codex --model {model}\"" in text
    # the agent's state: 2 staged, 1 unstaged, 4 untracked files, 1 claimed task
    api = shop.parent / "shop-api"
    sb.write_files({"src/api/a.py": "a\n", "src/api/b.py": "b\n"}, api)
    sb.git("add", "src/api/a.py", "src/api/b.py", cwd=api)
    (api / "src/api/orders.py").write_text("def orders(): return 1\n")
    sb.write_files({f"src/api/new{i}.py": f"{i}\n" for i in range(4)}, api)
    sb.run(["git", "fleet-task", "add", "Refunds", "--agent", "api"], cwd=shop)
    sb.run(["git", "fleet-task", "claim"], cwd=api)
    [teleport] = blocks("Teleport")
    run_block(Terminal(sb, shop), teleport, shop.parent, "/home/me", {})
    assert sb.git("ls-remote", str(hub), "refs/fleet/teleport/api", cwd=shop).out.strip()


def machine_steps(section: str) -> list[tuple[str, str, list[str]]]:
    """The ```console lines of a `## section`, each machine's: (machine: "" for `$ `, else the
    prompt's name, as `box` for `box$ `; command; output lines)."""
    text = README.read_text(encoding="utf-8")
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    steps: list[tuple[str, str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", body, re.S):
        for line in block.splitlines():
            m = re.match(r"(\w*)\$ (.*)", line)
            if m:
                steps.append((m.group(1), m.group(2), []))
            elif steps:
                steps[-1][2].append(line)
    return steps


def _seen(lines: list[str], ids: dict[str, str], me: str, root: Path) -> list[str]:
    """Lines as compared: each machine named by its id (one user and host here), dates left out."""
    for ident, name in ids.items():
        lines = [ln.replace(f"{ident} ({me})", f"{ident} (me@{name})") for ln in lines]
    return normal([re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", "DATE", ln) for ln in lines], root, "/home/me")


def test_the_two_machine_tour_works_as_printed(sandbox: Sandbox) -> None:
    """Both machines' lines: the laptop's (`$ `) in the shop's clone, the cloud machine's (`box$ `)
    in a directory and HOME of its own; the remote on GitHub is a bare repository here."""
    import getpass
    import socket

    sb = sandbox
    shop = make_shop(sb, sb.root / "laptop")
    hub = sb.root / "shop.git"
    sb.git("init", "-q", "--bare", "-b", "main", str(hub), cwd=sb.root)
    sb.git("remote", "add", "origin", str(hub), cwd=shop)
    sb.git("push", "-q", "-u", "origin", "main", cwd=shop)
    (sb.root / "box" / "home").mkdir(parents=True)
    # (an agent's commit is published at once: the background publisher ends within the test)
    (sb.root / "box" / "home" / ".gitconfig").write_text("[user]\n\tname = box\n\temail = box@example.com\n"
                                                         "[fleet]\n\tpublishEvery = 0\n")
    terms = {"": Terminal(sb, shop), "box": Terminal(sb, sb.root / "box", env={"HOME": str(sb.root / "box" / "home")})}
    me = f"{getpass.getuser()}@{socket.gethostname()}"
    steps = machine_steps("One fleet across machines")
    assert [m for m, _, _ in steps].count("box") >= 5
    for machine, command, printed in steps:
        term = terms[machine]
        if command.startswith("git add docs/research"):  # the agent wrote its findings
            sb.write_files({"docs/research/providers.md": "# Payment providers\n\nCompared.\n"}, term.cwd)
        code, got = term.type(command.replace("git@github.com:me/shop.git", str(hub)))
        root = sb.root / (machine or "laptop")

        ids = {sb.git("config", "fleet.machine", cwd=where, ok=None).out.strip(): name
               for name, where in (("laptop", shop), ("box", sb.root / "box" / "shop")) if where.exists()}

        assert _seen(got, ids, me, root) == _seen(printed, ids, me, root), f"{machine}$ {command}\n" + "\n".join(got)
        assert code == 0, f"{machine}$ {command} exited {code}:\n" + "\n".join(got)
    assert sb.git("rev-parse", "main", cwd=hub).out == sb.git("rev-parse", "main", cwd=shop).out
    assert (shop / "docs/research/providers.md").exists()


def test_a_block_that_waits_for_the_keyboard_fails_and_leaves_nothing(sandbox: Sandbox) -> None:
    """A README line such as `git fleet-prune` (which asks) must fail this file's tests, not hang CI."""
    term = Terminal(sandbox, sandbox.root, patience=1)
    with pytest.raises(AssertionError, match="did not finish"):
        term.type("cat")
