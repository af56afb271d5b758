# git-fleet shell completion for fish: `git-fleet-NAME <TAB>` (vendor_completions.d/git-fleet-NAME.fish),
# and `git fleet-NAME <TAB>`, which fish's git completion hands on to git-fleet-NAME (3.6.1 and
# later; vendor_conf.d/git-fleet.fish for older ones). The answers come from
# `python -m git_fleet.cli.completion complete fleet-NAME WORD...`.
function __git_fleet_complete --description 'Complete git-fleet commands; --git: is this git fleet-NAME?'
    set -l words (commandline -xpc 2>/dev/null); or set words (commandline -opc)  # -x: fish 3.7 and later
    set -l cur (commandline -ct)
    set -l cmd (string replace -r '^.*/' '' -- $words[1])
    set -l start 2
    if test "$cmd" = git  # git [OPTIONS] fleet-NAME ...: the first word that is not an option
        set cmd
        set -l skip
        for i in (seq 2 (count $words))
            if test -n "$skip"
                set skip
            else if contains -- $words[$i] -C -c --git-dir --work-tree --namespace --config-env
                set skip 1
            else if not string match -q -- '-*' $words[$i]
                string match -qr '^fleet(-[a-z]+)?$' -- $words[$i]; and set cmd $words[$i]
                set start (math $i + 1)
                break
            end
        end
    else
        set cmd (string replace -r '^git-' '' -- $cmd)
    end
    if contains -- --git $argv
        test -n "$cmd"
        return
    end
    set -l args
    for i in (seq $start (count $words))
        set -a args $words[$i]
    end
    test -x @PYTHON@; or return  # the interpreter is gone (its venv deleted): nothing, and no error
    set -l prefix (string match -r -- '^-[^=]*=' $cur)  # --option=value: fish completes the whole word
    for line in (@PYTHON@ -I -m git_fleet.cli.completion complete $cmd $args "$cur" 2>/dev/null)
        set -l parts (string split \t -- $line)
        switch $parts[1]
            case plain
                printf '%s%s\t%s\n' "$prefix" $parts[2] "$parts[3]"
            case file
                __fish_complete_path (string replace -r -- '^-[^=]*=' '' $cur)
            case dir
                __fish_complete_directories (string replace -r -- '^-[^=]*=' '' $cur)
        end
    end
end
