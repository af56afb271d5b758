#!/bin/sh
# git-fleet-hook-v1: installed by `git fleet-init`, removed by `git fleet-init --uninstall`.
# Runs the hook that was here before (kept beside this file as HOOK.pre-fleet), then the
# fleet's zone check. Hooks are fast feedback; merges and servers check the zones again.
hook=@HOOK@
check=@CHECK@
stdin=@STDIN@
dir=${0%/*}
[ -x "$check" ] || check=$(command -v git-fleet-check) || check=
if [ "$stdin" = 1 ]; then
    input=$(cat)
    if [ -x "$dir/$hook.pre-fleet" ]; then
        printf '%s\n' "$input" | "$dir/$hook.pre-fleet" "$@" || exit $?
    fi
    if [ -z "$check" ]; then
        echo "warning: git-fleet-check is not on PATH; zones are not checked by this $hook hook" >&2
        exit 0
    fi
    printf '%s\n' "$input" | "$check" --hook "$hook" "$@"
    exit $?
fi
if [ -x "$dir/$hook.pre-fleet" ]; then
    "$dir/$hook.pre-fleet" "$@" || exit $?
fi
if [ -z "$check" ]; then
    echo "warning: git-fleet-check is not on PATH; zones are not checked by this $hook hook" >&2
    exit 0
fi
exec "$check" --hook "$hook" "$@"
