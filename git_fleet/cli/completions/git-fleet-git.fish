# git-fleet shell completion for fish: `git fleet-NAME <TAB>` where fish's git completion does not
# hand git-foo commands on to their own completions (fish before 3.2, and 3.6.0).
if string match -qr '^(2\.|3\.[01]\.|3\.6\.0$)' -- $version
    complete -c git -f -n '__git_fleet_complete --git' -a '(__git_fleet_complete)'
end
