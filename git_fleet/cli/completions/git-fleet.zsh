# git-fleet shell completion for zsh: _git calls this as _git-fleet-NAME for `git fleet-NAME <TAB>`
# (words[1] is fleet-NAME), and #compdef calls it for `git-fleet-NAME <TAB>`. The answers come
# from `python -m git_fleet.cli.completion complete fleet-NAME WORD...`.
local cmd=${${words[1]:t}#git-} line files
local -a parts described
for line in "${(@f)$(@PYTHON@ -I -m git_fleet.cli.completion complete $cmd "${(@Q)words[2,CURRENT-1]}" "${(Q)PREFIX}" 2>/dev/null)}"; do
  parts=("${(@ps:\t:)line}")
  case $parts[1] in
    (plain) described+=("${parts[2]//:/\\:}${parts[3]:+:$parts[3]}") ;;
    (file|dir) files=$parts[1] ;;
  esac
done
if [[ $files == file ]]; then
  _files
elif [[ $files == dir ]]; then
  _files -/
elif (( $#described )); then
  [[ $PREFIX == -*=* ]] && compset -P '*='  # --option=value: complete the value
  _describe -t values value described
else
  return 1
fi
