#!/bin/sh
# git-fleet-hook-v1: installed by `git fleet-init`, removed by `git fleet-init --uninstall`.
# Runs the hook that was here before (kept beside this file as HOOK.pre-fleet), then the
# fleet's zone check. Hooks are fast feedback; merges and servers check the zones again.
hook=@HOOK@
python=@PYTHON@
stdin=@STDIN@
dir=${0%/*}
if [ "$hook" = post-commit ]; then
    # a fleet across machines: the publisher (git_fleet/publish.py) started in the background,
    # detached; it decides whether the commit is an agent's, and the commit does not wait for it
    if [ -x "$dir/$hook.pre-fleet" ]; then
        "$dir/$hook.pre-fleet" "$@"
    fi
    if [ -x "$python" ]; then
        spawn=; command -v setsid >/dev/null && spawn=setsid
        $spawn "$python" -m git_fleet.publish --hook </dev/null >/dev/null 2>&1 &
    fi
    exit 0
fi
# Python straight from git-fleet's environment: ~5 ms faster than its console script.
run='import sys
try:
    from git_fleet.hook import main
except ImportError:
    print("warning: git-fleet is gone from " + sys.executable + "; zones are not checked by this hook", file=sys.stderr)
    sys.exit(0)
sys.exit(main())'
check() {
    if [ -x "$python" ]; then
        "$python" -c "$run" --hook "$hook" "$@"
    elif command -v git-fleet-check >/dev/null; then
        git-fleet-check --hook "$hook" "$@"
    else
        echo "warning: git-fleet-check is not on PATH; zones are not checked by this $hook hook" >&2
    fi
}
if [ "$stdin" = 1 ]; then
    input=$(cat)
    if [ -x "$dir/$hook.pre-fleet" ]; then
        printf '%s\n' "$input" | "$dir/$hook.pre-fleet" "$@" || exit $?
    fi
    printf '%s\n' "$input" | check "$@"
    exit $?
fi
if [ -x "$dir/$hook.pre-fleet" ]; then
    "$dir/$hook.pre-fleet" "$@" || exit $?
fi
check "$@"
