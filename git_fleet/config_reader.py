"""The reader behind config.py: .gitfleet.toml's TOML parsed, each value taken with its type
checked, each error with the file and the line of the key it is about."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .templates import unknown_in_path

SCHEMA_VERSION = 5
# keys a file may use only once it says `version = N`, so that a git-fleet too old for them says
# "written for a newer git-fleet" instead of "unknown key": (table, key) -> the version
INTRODUCED = {("checkpoints.*", "timeout"): 2, ("fleet", "ignore_case"): 3,
              **{(table, key): 5 for table in ("fleet", "agents.*")
                 for key in ("sandbox", "sandbox_write", "sandbox_ports")}}


def read_toml(path: Path, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
        loc = f"{m.group(1)}:{m.group(2)}" if m else "1"
        raise ConfigError(f"{path}:{loc}: {msg}", f"{path.name} must be valid TOML (https://toml.io)") from None


def _line_of(text: str, table: tuple[str, ...], key: str | None = None) -> int:
    """Best line number for a key (or a table header) in the TOML text, 1-based."""
    lines = text.splitlines()
    header = re.compile(r"^\s*\[+\s*(.+?)\s*\]+\s*(#.*)?$")
    current: tuple[str, ...] = ()
    table_line = 1
    for no, line in enumerate(lines, 1):
        m = header.match(line)
        if m:
            current = tuple(part.strip().strip("\"'") for part in m.group(1).split("."))
            if current == table:
                table_line = no
            continue
        if key is not None and current == table and re.match(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=", line):
            return no
    # keys written as dotted keys or inline tables land here: point at the table, or the start
    return table_line


class Reader:
    def __init__(self, path: Path, text: str):
        self.path = path
        self.text = text
        self.version = SCHEMA_VERSION

    def fail(self, table: tuple[str, ...], key: str | None, what: str, hint: str | None = None) -> ConfigError:
        line = _line_of(self.text, table, key)
        return ConfigError(f"{self.path}:{line}: {what}", hint or f"fix {self.path.name} and run the command again")

    def take(self, data: Mapping[str, Any], table: tuple[str, ...], key: str, kind: type, default: Any) -> Any:
        if key not in data:
            return default
        value = data[key]
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            label = ".".join(table + (key,))
            raise self.fail(table, key, f"'{label}' must be {kind.__name__ if kind is not str else 'a string'}, not {value!r}")
        return value

    def path_template(self, table: tuple[str, ...], template: str | None) -> str | None:
        bad = None if template is None else unknown_in_path(template)
        if template is not None and self.version < 4 and "{repo}" in template.replace("{{", ""):
            raise self.fail(table, "worktree", f"{{repo}} in {'.'.join(table)}.worktree needs `version = 4` at the top "
                            f"of {self.path.name} (it says {self.version})",
                            "set version = 4; git-fleet releases that do not know {repo} then say they are too old")
        if bad == "{":
            raise self.fail(table, "worktree", f"a lone brace in {'.'.join(table)}.worktree",
                            "write a brace as {{ or }}; placeholders: {repo}, {agent}")
        if bad is not None:
            raise self.fail(table, "worktree", f"unknown placeholder {{{bad}}} in {'.'.join(table)}.worktree",
                            "placeholders: {repo} (the main worktree's directory name), {agent}; "
                            "write a brace as {{ or }}")
        if template is not None and not template.strip():
            raise self.fail(table, "worktree", f"'{'.'.join(table)}.worktree' is empty")
        return template

    def unknown(self, data: Mapping[str, Any], table: tuple[str, ...], allowed: set[str]) -> None:
        for key in data:
            if key not in allowed:
                where = ".".join(table) or "the top level"
                raise self.fail(table, key, f"unknown key '{key}' in {where}", "known keys: " + ", ".join(sorted(allowed)))
            pattern = ".".join(table[:1] + ("*",) * (len(table) - 1))
            needs = INTRODUCED.get((pattern, key), 1)
            if needs > self.version:
                label = ".".join(table + (key,))
                raise self.fail(table, key, f"'{label}' needs `version = {needs}` at the top of {self.path.name} "
                                f"(it says {self.version})",
                                f"set version = {needs}; git-fleet releases older than the one that added "
                                f"'{key}' then say they are too old, rather than misreading the file")
