"""The project's promises about itself: install, man pages, help, README and CI agree."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from git_fleet import manpage

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_man_pages_are_generated_from_the_commands_help(tmp_path: Path) -> None:
    manpage.main([str(tmp_path)])
    for page in sorted(tmp_path.iterdir()):
        assert (ROOT / "man" / page.name).read_text() == page.read_text(), (
            f"man/{page.name} is stale: run `python -m git_fleet.manpage man`")
    assert sorted(p.name for p in (ROOT / "man").glob("*.1")) == sorted(p.name for p in tmp_path.iterdir())


def test_every_command_has_a_man_page_with_every_option() -> None:
    for script in SCRIPTS:
        page = (ROOT / "man" / f"{script}.1").read_text()
        assert f".SH NAME\n{script.replace('-', chr(92) + '-')}" in page
    from git_fleet.cli.commands import ALL

    import click

    for name, top in ALL.items():
        page = (ROOT / "man" / f"git-fleet-{name}.1").read_text().replace("\\-", "-")
        commands = list(top.commands.values()) if isinstance(top, click.Group) else [top]
        for cmd in commands:
            assert isinstance(cmd, click.Group) or cmd is top or f" {cmd.name} " in page, cmd.name
        for param in [p for c in commands for p in c.params] + top.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("-"):
                    assert opt in page, f"{opt} of fleet-{name} is missing from its man page"


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci/run").read_text()
    command = ci.strip().splitlines()[-1]
    assert command.startswith("python3 -m venv .venv") and "pytest" in command
    assert command in readme.split("\n## ")[0], "the README's first screen must give the command CI runs"
    assert "./install.sh" in readme.split("\n## ")[0]


def test_pre_commit_framework_hook_is_declared() -> None:
    text = (ROOT / ".pre-commit-hooks.yaml").read_text()
    assert "id: fleet-zone-check" in text and "entry: git-fleet-check --hook pre-commit" in text
    assert "git-fleet-check" in SCRIPTS


@pytest.mark.slow
def test_install_sh_installs_commands_and_man_pages(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    env = {**os.environ, "PREFIX": str(prefix)}
    for _ in range(2):  # a second run is harmless
        proc = subprocess.run([str(ROOT / "install.sh")], env=env, capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    assert "not on your PATH" in proc.stderr
    for script in SCRIPTS:
        exe = prefix / "bin" / script
        assert exe.is_symlink() and os.access(exe, os.X_OK)
        assert (prefix / "share/man/man1" / f"{script}.1").is_file()
    assert (prefix / "share/git-fleet/venv/bin/python").exists()

    user = {**env, "PATH": f"{prefix / 'bin'}:/usr/bin:/bin", "MANPAGER": "cat", "PAGER": "cat", "MANWIDTH": "80"}
    user.pop("MANPATH", None)
    # -h reaches the program; --help is turned by git into `man git-fleet-add`
    short = subprocess.run(["git", "fleet-add", "-h"], env=user, capture_output=True, text=True)
    assert short.returncode == 0 and "Usage: git fleet-add [OPTIONS] NAME" in short.stdout
    if subprocess.run(["sh", "-c", "command -v man"], capture_output=True).returncode == 0:
        long = subprocess.run(["git", "fleet-add", "--help"], env=user, capture_output=True, text=True)
        assert long.returncode == 0, long.stderr
        assert "GIT-FLEET-ADD(1)" in long.stdout and "ZONES" in long.stdout
        helped = subprocess.run(["git", "help", "fleet-who"], env=user, capture_output=True, text=True)
        assert "git-fleet-who - print the agent(s) that own each" in re.sub(r"\s+", " ", helped.stdout)

    # the installed commands work in a fresh repository, hooks included
    repo = tmp_path / "repo"
    run = lambda *a, cwd=repo: subprocess.run(list(a), cwd=cwd, env=user, capture_output=True, text=True)
    run("git", "init", "-q", str(repo), cwd=tmp_path)
    (repo / "src").mkdir()
    (repo / "src/a.py").write_text("a\n")
    (repo / "b.txt").write_text("b\n")
    run("git", "add", "-A")
    run("git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "init")
    assert run("git", "fleet-init").returncode == 0
    hook = (repo / ".git/hooks/pre-commit").read_text()
    assert str(prefix / "share/git-fleet/venv/bin/python") in hook
    assert run("git", "fleet-add", "src", "--zone", "src/**").returncode == 0
    wt = tmp_path / "repo-src"
    (wt / "b.txt").write_text("changed\n")
    res = run("git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qam", "x", cwd=wt)
    assert res.returncode == 1 and "modified b.txt" in res.stderr
