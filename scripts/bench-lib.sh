# Shared by the benchmark scripts (sourced, not run): a local provider and a fresh database.

# Starts `soundtrend demo-server` (both dialects, generated windows) on a free port; sets $port
# and $demo (its pid) and waits until it answers. The caller's EXIT trap should kill $demo.
start_demo_server() {
    local bin="$1"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    "$bin" demo-server --listen "127.0.0.1:$port" >/dev/null 2>&1 &
    demo=$!
    for _ in $(seq 50); do
        curl -s "http://127.0.0.1:$port/" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
}

# Drops and re-creates database $2 on server $1 (a URL), migrated by soundtrend binary $3.
fresh_database() {
    local server="$1" name="$2" bin="$3" base="${1%%\?*}"
    psql "$server" -qc "DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null 2>&1
    DATABASE_URL="${base%/*}/$name" "$bin" migrate >/dev/null
}
