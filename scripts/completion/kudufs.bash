# bash completion for kudufs, kudufs-to-blob and kudufs-import-publish-settings
#                                                          -*- shell-script -*-
# Installed as $(PREFIX)/share/bash-completion/completions/kudufs; the other two
# commands are symlinks to it there, because bash-completion loads a file by
# the name of the command being completed. Needs bash-completion (>= 2.0).
# tests/test_packaging.py checks these lists against each command's --help.
# COMPREPLY=($(compgen ...)) is bash-completion's own idiom; IFS is a newline
# where a candidate may hold a space.
# shellcheck shell=bash disable=SC2207,SC2034

# kudufs's own -o keys, then the FUSE mount options worth offering.
_kudufs_okeys='config= cache_dir= cache_max= dump_ttl= list_ttl= detail_ttl=
negative_ttl= connect_timeout= meta_timeout= first_byte_timeout=
stall_timeout= command_timeout= min_rate= max_json= max_conns= prefetch_max= insecure ca_file=
arm_endpoint= max_threads= max_idle_threads= clone_fd allow_other allow_root
default_permissions debug fsname= ro'
_kudufs_opts='-f -d -s -o -h --help -V --version --check --app --config'
_kudufs_to_blob_opts='--mount --app --config -o --type --all --pid --name
--include-scm --container --account-url --instances --date-format --parallel
--uploader --dry-run -n --quiet --alert -h --help'
_kudufs_import_opts='--config --password-dir --name --url --force -h --help'

# The [app NAME] sections of the config file that the command line names
# (--config FILE, -o config=FILE), else of $KUDUFS_CONFIG (kudufs-to-blob's),
# else of kudufs's default file. Prints one name a line.
_kudufs_config_apps()
{
    local cfg="" i w
    for ((i = 1; i < ${#words[@]}; i++)); do
        w=${words[i]}
        case $w in
            --config) cfg=${words[i + 1]-} ;;
            --config=*) cfg=${w#--config=} ;;
            -o) [[ ${words[i + 1]-} == *config=* ]] && w=${words[i + 1]} && cfg=${w##*config=} && cfg=${cfg%%,*} ;;
        esac
    done
    [[ $cfg ]] || cfg=${KUDUFS_CONFIG-}
    [[ $cfg ]] || cfg=${XDG_CONFIG_HOME:-$HOME/.config}/kudufs/config
    __expand_tilde_by_ref cfg
    [[ -r $cfg ]] || return 0
    sed -n 's/^[[:space:]]*\[app[[:space:]]\{1,\}\([^]]*[^][:space:]]\)[[:space:]]*\].*/\1/p' -- "$cfg" 2>/dev/null
}

# Readline replaces only the text after the last COMP_WORDBREAKS character
# ('=' by default); cut that part off the candidates (as
# __ltrim_colon_completions does for ':').
_kudufs_ltrim_equals()
{
    if [[ $cur == *=* && $COMP_WORDBREAKS == *=* ]]; then
        local pre=${cur%"${cur##*=}"}
        COMPREPLY=("${COMPREPLY[@]#"$pre"}")
    fi
}

# -o OPT[,OPT...]: keys, and files for the keys that take a path.
_kudufs_complete_okeys()
{
    local prefix="" item=$cur key val IFS=$'\n'
    if [[ $cur == *,* ]]; then
        prefix=${cur%,*},
        item=${cur##*,}
    fi
    case $item in
        config=* | cache_dir=* | ca_file=*)
            key=${item%%=*} val=${item#*=}
            if [[ $key == cache_dir ]]; then
                COMPREPLY=($(compgen -d -- "$val"))
            else
                COMPREPLY=($(compgen -f -- "$val"))
            fi
            COMPREPLY=("${COMPREPLY[@]/#/$prefix$key=}")
            ;;
        *)
            IFS=$' \t\n'
            COMPREPLY=($(compgen -P "$prefix" -W "$_kudufs_okeys" -- "$item"))
            ;;
    esac
    [[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == *[=/] ]] && compopt -o nospace
    _kudufs_ltrim_equals
}

_kudufs_complete_apps()
{
    local IFS=$'\n'
    COMPREPLY=($(compgen -W "$(_kudufs_config_apps)" -- "$cur"))
}

_kudufs()
{
    local cur prev words cword split
    _init_completion -s || return

    case $prev in
        --config) _filedir; return ;;
        --app) _kudufs_complete_apps; return ;;
        -o) _kudufs_complete_okeys; return ;;
        -h | --help | -V | --version) return ;;
    esac
    $split && return

    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$_kudufs_opts" -- "$cur"))
        return
    fi
    # the mount point
    _filedir -d
} &&
    complete -F _kudufs kudufs

_kudufs_to_blob()
{
    local cur prev words cword split
    _init_completion -s || return

    case $prev in
        --mount) _filedir -d; return ;;
        --config) _filedir; return ;;
        --app) _kudufs_complete_apps; return ;;
        -o) _kudufs_complete_okeys; return ;;
        --type) COMPREPLY=($(compgen -W 'mini full withheap triage' -- "$cur")); return ;;
        --uploader) COMPREPLY=($(compgen -W 'azcopy az sdk' -- "$cur")); return ;;
        --instances) COMPREPLY=($(compgen -W 'all' -- "$cur")); return ;;
        --alert) _filedir json; [[ - == "$cur"* ]] && COMPREPLY+=(-); return ;;
        --pid | --name | --container | --account-url | --date-format | --parallel | -h | --help) return ;;
    esac
    $split && return

    COMPREPLY=($(compgen -W "$_kudufs_to_blob_opts" -- "$cur"))
    [[ ${COMPREPLY-} == *= ]] && compopt -o nospace
} &&
    complete -F _kudufs_to_blob kudufs-to-blob

_kudufs_import_publish_settings()
{
    local cur prev words cword split
    _init_completion -s || return

    case $prev in
        --config) _filedir; return ;;
        --password-dir) _filedir -d; return ;;
        --name | --url | -h | --help) return ;;
    esac
    $split && return

    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$_kudufs_import_opts" -- "$cur"))
        return
    fi
    _filedir '@(PublishSettings|publishsettings|xml)'
} &&
    complete -F _kudufs_import_publish_settings kudufs-import-publish-settings

# ex: filetype=sh
