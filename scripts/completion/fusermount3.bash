# shellcheck shell=bash
# bash completion for fusermount3                          -*- shell-script -*-
# Installed as $(PREFIX)/share/bash-completion/completions/fusermount3 by
# kudufs: Debian 12's bash-completion completes `fusermount` (FUSE 2) only.
# Reuse its function: `fusermount3 -u <TAB>` offers the mounted FUSE file
# systems (kudufs mounts are type fuse.kudufs), options come from -h.
if declare -F _fusermount >/dev/null || __load_completion fusermount; then
    complete -F _fusermount fusermount3
fi

# ex: filetype=sh
