"""The project's promises about itself: install, man pages, help, README and CI agree."""

from __future__ import annotations

import tomllib
from pathlib import Path

from git_fleet.cli import manpage

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_man_pages_are_generated_from_the_commands_help(tmp_path: Path) -> None:
    manpage.main([str(tmp_path)])
    for page in sorted(tmp_path.iterdir()):
        assert (ROOT / "man" / page.name).read_text() == page.read_text(), (
            f"man/{page.name} is stale: run `python -m git_fleet.cli.manpage man`")
    assert sorted(p.name for p in (ROOT / "man").glob("*.1")) == sorted(p.name for p in tmp_path.iterdir())


def test_every_command_has_a_man_page_with_every_option() -> None:
    for script in SCRIPTS:
        page = (ROOT / "man" / f"{script}.1").read_text()
        assert f".SH NAME\n{script.replace('-', chr(92) + '-')}" in page
    import click

    from git_fleet.cli.commands import ALL

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


def test_every_test_listed_as_slow_is_still_there() -> None:
    """tests/slow.txt (the quick loop leaves out what it lists) names only tests that exist."""
    gone = []
    for line in (ROOT / "tests/slow.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        path, _, name = line.partition("::")
        source = ROOT / path
        cut = "[" in name and not name.endswith("]")  # an id read only up to a space in its parameters
        if cut or not source.is_file() or f"def {name.split('[')[0]}(" not in source.read_text():
            gone.append(line)
    assert not gone, "listed as slow, but no such test (run tests/slow.py again):\n" + "\n".join(gone)
