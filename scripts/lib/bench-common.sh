# bench-common.sh - helpers shared by scripts/bench-start.sh and scripts/bench.sh (sourced).

# Milliseconds, without forking (bash 5's EPOCHREALTIME), into NOW.
stamp() {
    local t=${EPOCHREALTIME//[!0-9]/}
    NOW=$((10#$t / 1000))
}

# Does the process PID (in its network namespace) have a listener on TCP port 2379?
listening_2379() {
    local l
    [[ -r /proc/$1/net/tcp ]] || return 1
    while read -r _ l _ st _; do
        [[ $l == *:094B && $st == 0A ]] && return 0
    done </proc/"$1"/net/tcp
    return 1
}

median() { # numbers... (anything else ignored) -> median or "-"
    local v=() s
    for s in "$@"; do [[ $s =~ ^[0-9]+$ ]] && v+=("$s"); done
    ((${#v[@]})) || { echo -; return; }
    mapfile -t v < <(printf '%s\n' "${v[@]}" | sort -n)
    local k=${#v[@]}
    if ((k % 2)); then echo "${v[k / 2]}"; else echo $(((v[k / 2 - 1] + v[k / 2]) / 2)); fi
}

worst() { # numbers... (anything else ignored) -> the largest or "-"
    local v=() s
    for s in "$@"; do [[ $s =~ ^[0-9]+$ ]] && v+=("$s"); done
    ((${#v[@]})) || { echo -; return; }
    printf '%s\n' "${v[@]}" | sort -n | tail -n 1
}

ratio() { # A B -> B/A with two decimals, or n/a
    if [[ $1 =~ ^[0-9]+$ && $2 =~ ^[0-9]+$ && $1 -gt 0 ]]; then
        awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b / a }'
    else
        echo n/a
    fi
}
