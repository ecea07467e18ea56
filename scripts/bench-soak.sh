#!/usr/bin/env bash
# Soak: `soundtrend run` re-polling a watchlist every minute against a local provider, for a while.
#
#   scripts/bench-soak.sh [MINUTES] [ENTRIES]        (defaults: 30 minutes, 5000 entries)
#
# 1. starts `soundtrend demo-server` (both dialects, generated period-7 windows) on a free port;
# 2. a fresh database `soundtrend_soak` with ENTRIES watchlist entries, each polled every minute
#    (5000 entries = about 83 requests/s; the rate limit is set to 100/s);
# 3. runs the daemon for MINUTES, sampling its RSS every 30 s;
# 4. prints RSS over time, polls stored, and the database's growth per poll and per table, with
#    what that makes per (clip, region) polled daily for a year.
#
# Needs a release build (`cargo build --release --bin soundtrend`) and DATABASE_URL (or a local
# server scripts/pg-up.sh finds). Figures are in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MINUTES="${1:-30}"
ENTRIES="${2:-5000}"
server="${DATABASE_URL:-$(scripts/pg-up.sh)}"
base_url="${server%%\?*}"
db="${base_url%/*}/soundtrend_soak"
bin=target/release/soundtrend
[[ -x "$bin" ]] || cargo build --release --bin soundtrend

source scripts/bench-lib.sh
daemon=
demo=
cleanup() {
    [[ -n "$daemon" ]] && kill "$daemon" 2>/dev/null || true
    [[ -n "$demo" ]] && kill "$demo" 2>/dev/null || true
}
trap cleanup EXIT
start_demo_server "$bin"
fresh_database "$server" soundtrend_soak "$bin"
export DATABASE_URL="$db"
psql "$db" -qc "INSERT INTO watchlist (clip_id, region, period, poll_interval)
                SELECT (7200000000000000000 + g)::text, 'US', 7, interval '1 minute'
                FROM generate_series(0, $ENTRIES - 1) g"

size_sql="SELECT relname, pg_total_relation_size(c.oid) FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1"
psql "$db" -Atc "$size_sql" > /tmp/soak-sizes-start
db_start=$(psql "$db" -Atc "SELECT pg_database_size(current_database())")

export KEYAPI_API_KEY=soak \
    SOUNDTREND__PROVIDER__BASE_URL="http://127.0.0.1:$port/" \
    SOUNDTREND__PROVIDER__REQUESTS_PER_SECOND=100 \
    SOUNDTREND__PROVIDER__BURST=10 \
    SOUNDTREND__POLL__CONCURRENCY=8 \
    SOUNDTREND__ADMIN__LISTEN="" \
    SOUNDTREND__LOG__LEVEL=warn
"$bin" run >/tmp/soak-daemon.log 2>&1 &
daemon=$!
started=$(date +%s)
printf '| minute | daemon RSS (MiB) | anonymous (MiB) | file-backed (MiB) | polls stored |\n|---:|---:|---:|---:|---:|\n'
end=$((started + MINUTES * 60))
while (( $(date +%s) < end )); do
    sleep 30
    kill -0 "$daemon" 2>/dev/null || { echo "the daemon exited; see /tmp/soak-daemon.log" >&2; exit 1; }
    # Anonymous memory is the heap and stacks; file-backed is the binary's pages as code runs
    # for the first time: growth in the first, not the second, would be a leak.
    read -r rss anon file < <(awk '/^VmRSS:/ {r = $2} /^RssAnon:/ {a = $2} /^RssFile:/ {f = $2}
        END {printf "%.1f %.1f %.1f\n", r / 1024, a / 1024, f / 1024}' "/proc/$daemon/status")
    polls=$(psql "$db" -Atc "SELECT count(*) FROM fetches WHERE outcome = 'ok'")
    printf '| %.1f | %s | %s | %s | %s |\n' "$(python3 -c "print(($(date +%s) - $started) / 60)")" \
        "$rss" "$anon" "$file" "$polls"
done
peak=$(awk '/^VmHWM:/ {printf "%.1f", $2 / 1024}' "/proc/$daemon/status")
kill -TERM "$daemon"
wait "$daemon" || true
daemon=

polls=$(psql "$db" -Atc "SELECT count(*) FROM fetches WHERE outcome = 'ok'")
psql "$db" -qc "VACUUM ANALYZE" >/dev/null
db_end=$(psql "$db" -Atc "SELECT pg_database_size(current_database())")
psql "$db" -Atc "$size_sql" > /tmp/soak-sizes-end
echo
echo "peak RSS ${peak} MiB; $polls polls stored in $MINUTES minutes ($(python3 -c "print(f'{$polls / ($MINUTES * 60):.1f}')")/s)"
python3 - "$polls" "$db_start" "$db_end" <<'EOF'
import sys
polls, start, end = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def sizes(path):
    return {k: int(v) for k, v in (l.strip().split('|') for l in open(path) if l.strip())}
a, b = sizes('/tmp/soak-sizes-start'), sizes('/tmp/soak-sizes-end')
print(f"database: {(end - start) / polls:.0f} bytes per poll; a pair polled daily: "
      f"{(end - start) / polls * 365 / 2**20:.2f} MiB a year; 10^5 pairs: {(end - start) / polls * 365 * 1e5 / 2**30:.0f} GiB a year")
print("\n| table | bytes per poll |\n|---|---:|")
rows = sorted(((b[t] - a.get(t, 0)) / polls, t) for t in b)
for per, t in reversed(rows):
    if per >= 1:
        print(f"| {t} | {per:.0f} |")
EOF
psql "$server" -qc "DROP DATABASE IF EXISTS soundtrend_soak WITH (FORCE)" >/dev/null
