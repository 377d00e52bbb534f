# node-config.sh - the one config.toml of a lab node run by the scripts (demo, benchmarks), sourced.
#
# node_config DIR CLUSTER SIZE ETCD_BINARY CA_DIR DISCOVERY [HEAL_INTERVAL]
#   prints the config of a node whose files live in DIR (data, pki, etcd.env, etcd.service), in
#   cluster CLUSTER of SIZE members, running ETCD_BINARY as a process, with certificates signed by
#   the local CA in CA_DIR (ca.crt, ca.key). DISCOVERY is "srv:<domain>" or "peers:<toml list
#   items>", with DISCOVERY_TIMEOUT (default 90s). No HEAL_INTERVAL: no [heal] section.
# Scripts append what they need besides ([etcd.flags], [backup], [maintenance]); TOML lets a
# sub-table such as [etcd.flags] come after other sections.
node_config() {
    local dir=$1 cluster=$2 size=$3 binary=$4 ca=$5 discovery=$6 heal=${7:-}
    printf '[cluster]\nname = "%s"\nsize = %s\n\n' "$cluster" "$size"
    printf '[member]\ndata_dir = "%s/data"\n\n' "$dir"
    printf '[discovery]\n'
    case $discovery in
    srv:*) printf 'srv_domain = "%s"\n' "${discovery#srv:}" ;;
    peers:*) printf 'peers = [%s]\n' "${discovery#peers:}" ;;
    *)
        echo "node_config: DISCOVERY must be srv:<domain> or peers:<list>, not '$discovery'" >&2
        return 2
        ;;
    esac
    printf 'timeout = "%s"\n\n' "${DISCOVERY_TIMEOUT:-90s}"
    printf '[tls]\nmode = "local-ca"\ndir = "%s/pki"\nca_cert = "%s/ca.crt"\nca_key = "%s/ca.key"\n\n' \
        "$dir" "$ca" "$ca"
    printf '[etcd]\nbinary = "%s"\nservice_manager = "process"\n' "$binary"
    printf 'env_file = "%s/etcd.env"\nunit_path = "%s/etcd.service"\n' "$dir" "$dir"
    if [[ -n $heal ]]; then
        printf '\n[heal]\ninterval = "%s"\n' "$heal"
    fi
}
