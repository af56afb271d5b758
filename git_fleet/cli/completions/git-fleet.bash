# git-fleet shell completion for bash: `git fleet-NAME <TAB>` (git's completion calls _git_fleet_NAME,
# and bash-completion loads this file for it as git-fleet-NAME) and `git-fleet-NAME <TAB>`.
# The answers come from `python -m git_fleet.cli.completion complete fleet-NAME WORD...`.

__git_fleet_complete () {  # the command (fleet, fleet-rm, ...), then its words up to the one completed
    local cur=${!#} kind value files= prefix=
    local -a found=()
    while IFS=$'\t' read -r kind value _; do
        case $kind in
        plain) found+=("$value ") ;;
        file|dir) files=$kind ;;
        esac
    done < <(@PYTHON@ -I -m git_fleet.cli.completion complete "$@" 2>/dev/null)
    if [[ $cur == -*=* ]]; then  # --option=value: bash replaces the value alone where = breaks words
        [[ $COMP_WORDBREAKS == *=* ]] || prefix=${cur%%=*}=
        cur=${cur#*=}
    fi
    if [[ -n $files ]]; then
        compopt -o filenames +o nospace 2>/dev/null
        if [[ $files == dir ]]; then
            mapfile -t COMPREPLY < <(compgen -d -- "$cur")
        else
            mapfile -t COMPREPLY < <(compgen -f -- "$cur")
        fi
    else
        compopt +o default +o bashdefault 2>/dev/null  # nothing found: no file names either
        COMPREPLY=("${found[@]/#/$prefix}")
    fi
}

__git_fleet_git () {  # through git's completion, which keeps the words in words, cword and cur
    local i=1
    while [[ $i -lt $cword && ${words[i]} != "$1" ]]; do ((i++)); done
    __git_fleet_complete "$1" "${words[@]:i+1:cword-i-1}" "$cur"
}

__git_fleet_direct () {  # complete -F for git-fleet-NAME: $1 is the command as typed
    local cur words cword name=${1##*/}
    if declare -F _get_comp_words_by_ref >/dev/null; then
        _get_comp_words_by_ref -n =: cur words cword
    else
        words=("${COMP_WORDS[@]}") cword=$COMP_CWORD cur=${COMP_WORDS[COMP_CWORD]}
    fi
    __git_fleet_complete "${name#git-}" "${words[@]:1:cword-1}" "$cur"
}

for __git_fleet_c in @COMMANDS@; do
    eval "_git_${__git_fleet_c//-/_} () { __git_fleet_git $__git_fleet_c; }"
    complete -o nospace -F __git_fleet_direct "git-$__git_fleet_c"
done
unset __git_fleet_c
