"""git fleet-demo, and the README's first command that runs it on a fresh machine."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from helpers import Sandbox

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ZONES = {"api": ("src/api/", "tests/"), "web": ("src/web/",), "docs": ("docs/",)}


def bare_env(home: Path, path: str) -> dict[str, str]:
    """A fresh machine's environment: an empty HOME, no git identity, nothing of the test run's
    but the token that finds what it leaves running."""
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), "PATH": path, "LANG": "C.UTF-8", "FLEET_TEST_RUN": os.environ.get("FLEET_TEST_RUN", "")}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def check_the_outcome(shop: Path, said: str) -> None:
    """What the demo promises, checked in git itself."""
    first = git(shop, "rev-list", "--max-parents=0", "main").strip()
    for agent, zone in ZONES.items():
        changed = git(shop, "diff", "--name-only", first, f"fleet/{agent}").split()
        assert changed and all(p.startswith(zone) for p in changed), (agent, changed)
    assert "the commit hook refused my commit: commit rejected: agent 'docs' changed 1 path(s) outside its zone" in said
    tasks = json.loads(subprocess.run(["git", "fleet-task", "list", "--json"], cwd=shop, capture_output=True, text=True,
                                      env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}).stdout)
    assert [t["status"] for t in tasks] == ["done"] * 3 and all(Path(t["result"]).is_file() for t in tasks)
    merges = [m for m in git(shop, "log", "--first-parent", "--format=%P %s", f"{first}..main").splitlines()
              if " Merge " in m]
    assert [m.split(" ", 2)[2] for m in merges] == [f"Merge fleet/{a} (agent {a}, checkpoint demo)"
                                                      for a in ("docs", "web", "api")]
    assert [m.split()[1] for m in merges] == [git(shop, "rev-parse", f"fleet/{a}").strip() for a in ("docs", "web", "api")]
    # the checkpoint's test ran on the merged result and passed: main moved, tagged and logged
    assert git(shop, "rev-parse", "fleet/demo^{commit}") == git(shop, "rev-parse", "main~1")  # (then the bus)
    assert "demo\tmain" in (shop / ".git/fleet/checkpoints.log").read_text()
    assert "OK" in (shop / ".git/fleet/checkpoint-test.log").read_text()
    # the config and the bus are committed, as git fleet-init says to; nothing else is left over
    assert git(shop, "status", "--porcelain").strip() == ""
    assert "master_plan.md" in git(shop, "ls-files")


def nothing_works_under(where: Path) -> list[str]:
    from git_fleet.processes import working_in

    return [p for d in where.rglob("*") if d.is_dir() and not d.is_symlink() for p in working_in(d)]


@pytest.mark.slow
def test_the_readmes_first_command_works_on_a_fresh_machine(tmp_path: Path) -> None:
    """Its first block, literally, in a copy of the source with an empty HOME: install.sh into
    ~/.local, then the demo; then what install promises (a second run harmless, man pages)."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)\n```", readme.split("\n## ")[0], re.S)
    assert block is not None
    command = block.group(1)
    assert "git-fleet-demo" in command and "/path/to" not in command
    source = tmp_path / "git-fleet"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    home = tmp_path / "home"
    env = bare_env(home, "/usr/local/bin:/usr/bin:/bin")
    proc = subprocess.run(["bash", "-c", command], cwd=source, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_the_outcome(source / "fleet-demo" / "shop", proc.stdout)
    assert "export PATH=" in proc.stdout  # what the next steps need, as ~/.local/bin is not on PATH
    assert not nothing_works_under(source / "fleet-demo")

    prefix = home / ".local"
    again = subprocess.run(["./install.sh"], cwd=source, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "not on your PATH" in again.stderr
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for script in scripts:
        exe = prefix / "bin" / script
        assert exe.is_symlink() and os.access(exe, os.X_OK)
        assert (prefix / "share/man/man1" / f"{script}.1").is_file()
    user = {**env, "PATH": f"{prefix / 'bin'}:/usr/bin:/bin", "MANPAGER": "cat", "PAGER": "cat", "MANWIDTH": "80"}
    short = subprocess.run(["git", "fleet-add", "-h"], env=user, capture_output=True, text=True)
    assert short.returncode == 0 and "Usage: git fleet-add [OPTIONS] NAME" in short.stdout
    if shutil.which("man"):
        long = subprocess.run(["git", "fleet-add", "--help"], env=user, capture_output=True, text=True)
        assert long.returncode == 0 and "GIT-FLEET-ADD(1)" in long.stdout and "ZONES" in long.stdout
        helped = subprocess.run(["git", "help", "fleet-who"], env=user, capture_output=True, text=True)
        assert "git-fleet-who - print the agent(s) that own each" in re.sub(r"\s+", " ", helped.stdout)
    # the demo's fleet goes on with the installed commands, hooks included
    shop = source / "fleet-demo" / "shop"
    hook = (shop / ".git/hooks/pre-commit").read_text()
    assert str(prefix / "share/git-fleet/venv/bin/python") in hook
    web = source / "fleet-demo" / "shop-web"
    (web / "README.md").write_text("changed\n")
    res = subprocess.run(["git", "commit", "-qam", "x"], cwd=web, env=user, capture_output=True, text=True)
    assert res.returncode == 1 and "modified README.md" in res.stderr


def test_the_demo_with_no_git_identity_and_json(sandbox: Sandbox) -> None:
    """No identity, and global settings that would stop it or bypass its hooks: signing, a
    global hooks directory, another default branch."""
    sb = sandbox
    env = bare_env(sb.root / "home", "/usr/bin:/bin")
    (sb.root / "home/.gitconfig").write_text("[commit]\n\tgpgSign = true\n[tag]\n\tgpgSign = true\n"
                                              f"[core]\n\thooksPath = {sb.root / 'nowhere'}\n"
                                              "[init]\n\tdefaultBranch = trunk\n[user]\n\tuseConfigOnly = true\n")
    proc = subprocess.run([str(BIN / "git-fleet-demo"), "--json", "here"], cwd=sb.root, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["agents"] == {"api": 0, "web": 0, "docs": 0} and out["merged"] and out["tag"] == "fleet/demo"
    assert out["refused"] == ["docs: the commit hook refused my commit: commit rejected: agent 'docs' changed 1 "
                              "path(s) outside its zone"]
    assert sorted(p.name for p in (sb.root / "here").iterdir()) == ["shop", "shop-api", "shop-docs", "shop-web"]
    check_the_outcome(sb.root / "here" / "shop", "\n".join(out["refused"]).replace("docs: ", "", 1))
    # a second demo in the same place is refused, and nothing is touched
    again = subprocess.run([str(BIN / "git-fleet-demo"), "here"], cwd=sb.root, env=env, capture_output=True, text=True)
    assert again.returncode == 2 and f"error: {sb.root / 'here'} exists and is not empty" in again.stderr
    assert "hint: give the demo a new directory: git fleet-demo DIR" in again.stderr
    (sb.root / "afile").write_text("x\n")
    bad = subprocess.run([str(BIN / "git-fleet-demo"), "afile/sub"], cwd=sb.root, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and f"error: cannot make {sb.root / 'afile/sub'}: {sb.root / 'afile'} is not a directory" \
        in bad.stderr and bad.stdout == ""
    keep = subprocess.run([str(BIN / "git-fleet-demo"), "--keep", "k"], cwd=sb.root, env=env, capture_output=True,
                          text=True)
    assert keep.returncode == 2 and "--keep keeps the demo's tmux server: it goes with --tmux" in keep.stderr


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run installs it)")
def test_the_demo_in_tmux_ends_its_own_server(sandbox: Sandbox) -> None:
    sb = sandbox
    env = bare_env(sb.root / "home", "/usr/bin:/bin")
    proc = subprocess.run([str(BIN / "git-fleet-demo"), "--tmux", "d"], cwd=sb.root, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "$ git fleet-up --detach --stagger 0" in proc.stdout
    check_the_outcome(sb.root / "d" / "shop", proc.stdout)
    server = subprocess.run(["tmux", "list-sessions"], env={**env, "TMUX_TMPDIR": str(sb.root / "d" / ".tmux")},
                            capture_output=True, text=True)
    assert server.returncode != 0  # no server of its own left


def test_ctrl_c_stops_the_agents_and_says_where_things_are(sandbox: Sandbox) -> None:
    sb = sandbox
    env = bare_env(sb.root / "home", "/usr/bin:/bin")
    demo = sb.spawn([str(BIN / "git-fleet-demo"), "d"], cwd=sb.root, env=env, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE)
    assert demo.stdout is not None
    seen = ""
    deadline = time.time() + 120
    while "| claimed task-" not in seen:
        line = demo.stdout.readline()
        assert line and time.time() < deadline, seen
        seen += line
    demo.send_signal(signal.SIGINT)  # what Ctrl-C sends it (the stand-ins run in sessions of their own)
    out, err = demo.communicate(timeout=60)
    assert demo.returncode == 130, out + err
    assert ("error: interrupted while running the agents; the stand-in agents were stopped; what the demo made is "
            f"in {sb.root / 'd'}") in err and f"hint: look at it there, or remove it: rm -rf {sb.root / 'd'}" in err
    assert not nothing_works_under(sb.root / "d")


def test_a_stand_in_reads_the_refusal_of_a_path_git_quotes(fleet_repo: Sandbox) -> None:
    """The hook names a path with a space in quotes, C-escaped; the stand-in takes out exactly
    that path, commits what is its own, and finishes its task."""
    sb = fleet_repo
    web = sb.add_agent("web", "src/frontend/**")
    sb.run(["git", "fleet-task", "add", "the page", "--agent", "web"])
    plan = {"tasks": [{"edits": {"src/frontend/app.js": "app(3)\n", "docs/my \"page\".md": "stray\n"},
                       "message": "web: the page", "result": "done"}]}
    (web / ".fleet" / "plan.json").write_text(json.dumps(plan))
    res = sb.run(["git", "fleet-run", "web", "--", sys.executable, "-m", "git_fleet.standin", ".fleet/plan.json",
                  "--pace", "0"])
    assert 'it said: added "docs/my \\"page\\".md"  (owned by no agent: the orchestrator\'s)' in res.out
    assert 'took docs/my "page".md out: it is not in my zone' in res.out
    assert git(web, "show", "--name-only", "--format=", "HEAD").split() == ["src/frontend/app.js"]
    assert not (web / 'docs/my "page".md').exists() and git(web, "status", "--porcelain") == ""
    assert json.loads(sb.run(["git", "fleet-task", "show", "1", "--json"]).out)["status"] == "done"
