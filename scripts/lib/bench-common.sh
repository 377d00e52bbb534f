# bench-common.sh - helpers shared by the benchmark scripts (sourced).

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

# A real S3 server for a benchmark: SeaweedFS (`weed mini`, from $PY_DIR) over HTTPS with a
# certificate of the CA in DIR/ca (made first with `etcd-bootstrap ca init`), in namespace NS on
# IP, port 8333, bucket "bench", credentials benchkey/benchsecret0123456789 (also written 0600 to
# DIR/creds in the AWS shared-credentials format). Sets WEED_PID; stop it with SIGINT.
start_s3() { # DIR NS IP
    local dir=$1 ns=$2 ip=$3
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$dir/s3.key" \
        -out "$dir/s3.csr" -subj /CN=bench-s3 -addext "subjectAltName=IP:$ip" 2>/dev/null
    openssl x509 -req -in "$dir/s3.csr" -CA "$dir/ca/ca.crt" -CAkey "$dir/ca/ca.key" \
        -CAcreateserial -days 1 -copy_extensions copy -out "$dir/s3.crt" 2>/dev/null
    mkdir -p "$dir/s3data"
    # Local sockets of its own: the defaults (/tmp/seaweedfs-*-<port>.sock) are shared by every
    # S3 server on the machine, and a second one would talk to the first one's filer.
    ip netns exec "$ns" env AWS_ACCESS_KEY_ID=benchkey AWS_SECRET_ACCESS_KEY=benchsecret0123456789 \
        "$PY_DIR/bin/weed" mini -dir="$dir/s3data" -ip="$ip" -ip.bind="$ip" -s3.port=8333 \
        -s3.cert.file="$dir/s3.crt" -s3.key.file="$dir/s3.key" -bucket=bench \
        -filer.localSocket="$dir/filer.sock" -s3.localSocket="$dir/s3.sock" >"$dir/weed.log" 2>&1 &
    WEED_PID=$!
    printf '[default]\naws_access_key_id = benchkey\naws_secret_access_key = benchsecret0123456789\n' >"$dir/creds"
    chmod 600 "$dir/creds"
}
