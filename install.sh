#!/usr/bin/env bash
# Install git-fleet into a virtual environment of its own:
#   $PREFIX/share/git-fleet/venv   the environment (PREFIX defaults to ~/.local)
#   $PREFIX/bin/git-fleet-*        the commands (links into the environment)
#   $PREFIX/share/man/man1/        the man pages, so `git help fleet-add` works
#   $PREFIX/share/bash-completion/, zsh/, fish/   shell completion of `git fleet-NAME <TAB>`
# Running it again upgrades in place. PYTHON picks the interpreter (3.11 or newer).
set -euo pipefail

PREFIX=${PREFIX:-$HOME/.local}
PYTHON=${PYTHON:-python3}
src=$(cd "$(dirname "$0")" && pwd)
venv=$PREFIX/share/git-fleet/venv

fail() { echo "error: $1" >&2; [ -z "${2:-}" ] || echo "hint: $2" >&2; exit 1; }

command -v git >/dev/null || fail "git is not installed" "install git 2.38 or newer"
command -v "$PYTHON" >/dev/null || fail "$PYTHON not found" "install Python 3.11 or newer, or set PYTHON"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || fail "git-fleet needs Python 3.11 or newer; $PYTHON is $("$PYTHON" -V 2>&1)" "set PYTHON=python3.12 (or newer)"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
    || fail "$PYTHON cannot make virtual environments" "install the venv module (Debian: apt-get install python3-venv)"

if [ ! -x "$venv/bin/python" ]; then
    "$PYTHON" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$src"

mkdir -p "$PREFIX/bin" "$PREFIX/share/man/man1" "$PREFIX/share/man/man7"
for exe in "$venv"/bin/git-fleet "$venv"/bin/git-fleet-*; do
    ln -sfn "$exe" "$PREFIX/bin/$(basename "$exe")"
done
for page in "$venv"/share/man/man1/git-fleet*.1 "$venv"/share/man/man7/git-fleet*.7; do
    ln -sfn "$page" "$PREFIX/share/man/man${page##*.}/$(basename "$page")"
done
"$venv/bin/python" -I -m git_fleet.cli.completion install "$PREFIX"

version=$("$venv/bin/git-fleet" --version)
case ":$PATH:" in
    *":$PREFIX/bin:"*) echo "$version installed in $PREFIX/bin" ;;
    *) echo "$version installed in $PREFIX/bin, which is not on your PATH" >&2
       echo "hint: add it, e.g. echo 'export PATH=\"$PREFIX/bin:\$PATH\"' >> ~/.profile" >&2 ;;
esac
