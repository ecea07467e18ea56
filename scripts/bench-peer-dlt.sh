#!/usr/bin/env bash
# soundtrend against its peer, dlt, on the same responses and the same Postgres:
#
#   scripts/bench-peer-dlt.sh [N] [CONCURRENCY]   (defaults: N = 5000, poll.concurrency = 8)
#
# 1. starts `soundtrend demo-server` (both dialects; generated period-7 windows) on a free port;
# 2. soundtrend: a fresh database `soundtrend_peer`, N watchlist entries (period 7), then
#    `soundtrend poll --due` with the rate limit lifted, timed end to end (HTTP included);
#    Then the load alone: the derived tables emptied and `soundtrend replay` timed, which loads
#    the same N archived responses (parse, validate, normalize, write, re-stitch the index);
#    then the bound: the rows replay wrote dumped, the tables emptied, and the same rows loaded
#    again by COPY in one transaction, timed (no loader of soundtrend's schema beats it);
# 3. dlt (pip "dlt[postgres]" in a throwaway venv under target/): the same N responses, fetched
#    first, then loaded with merge on (clip_id, region) into the same server, timed on the load;
# 4. prints the rates and soundtrend's ratios to dlt: load against load (replay), the whole
#    poll path (HTTP, quota, leases included) against dlt's load, and COPY's against dlt's.
#
# Needs a release build (`cargo build --release --bin soundtrend`) and DATABASE_URL (or a local
# server scripts/pg-up.sh finds). Figures are in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N="${1:-5000}"
CONCURRENCY="${2:-8}"
FIRST_CLIP=7100000000000000000
server="${DATABASE_URL:-$(scripts/pg-up.sh)}"
base_url="${server%%\?*}"
db="${base_url%/*}/soundtrend_peer"
bin=target/release/soundtrend
[[ -x "$bin" ]] || cargo build --release --bin soundtrend

venv=target/dlt-venv
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "dlt[postgres]"
fi

source scripts/bench-lib.sh
demo=
trap '[[ -n "$demo" ]] && kill $demo 2>/dev/null || true' EXIT
start_demo_server "$bin"
fresh_database "$server" soundtrend_peer "$bin"
export DATABASE_URL="$db"
psql "$db" -qc "INSERT INTO watchlist (clip_id, region, period)
                SELECT ($FIRST_CLIP + g)::text, 'US', 7 FROM generate_series(0, $N - 1) g"
export KEYAPI_API_KEY=bench \
    SOUNDTREND__PROVIDER__BASE_URL="http://127.0.0.1:$port/" \
    SOUNDTREND__PROVIDER__REQUESTS_PER_SECOND=1000000 \
    SOUNDTREND__PROVIDER__BURST=1000 \
    SOUNDTREND__POLL__CONCURRENCY="$CONCURRENCY" \
    SOUNDTREND__POLL__CLAIM_BATCH=200 \
    SOUNDTREND__DATABASE__MAX_CONNECTIONS=$((CONCURRENCY + 8)) \
    SOUNDTREND__ADMIN__LISTEN="" \
    SOUNDTREND__LOG__LEVEL=warn
start=$(date +%s.%N)
"$bin" poll --due
end=$(date +%s.%N)
stored=$(psql "$db" -Atc "SELECT count(*) FROM fetches WHERE outcome = 'ok'")
st_rate=$(python3 -c "print(f'{$stored / ($end - $start):.1f}')")
echo "soundtrend (poll.concurrency $CONCURRENCY): $stored responses polled and stored in $(python3 -c "print(f'{$end - $start:.2f}')") s = $st_rate responses/s"

psql "$db" -qc "TRUNCATE sounds, sound_snapshots, trend_points, audience_country_lists, audience_interest_lists,
                         trend_windows, trend_observations, trend_index, trend_pairs"
start=$(date +%s.%N)
"$bin" replay
end=$(date +%s.%N)
rp_rate=$(python3 -c "print(f'{$stored / ($end - $start):.1f}')")
echo "soundtrend replay (load only): $stored responses in $(python3 -c "print(f'{$end - $start:.2f}')") s = $rp_rate responses/s"

# The bound on any loader of these rows: Postgres taking exactly the rows replay wrote by COPY,
# all tables in one transaction, with every index and foreign key in place (dumped, emptied,
# loaded again through psql). A load can only beat dlt by as much as this rate does.
derived=(sounds sound_snapshots trend_points audience_country_lists audience_interest_lists
         trend_windows trend_observations trend_pairs trend_index)
dump="$(mktemp -d)"
for t in "${derived[@]}"; do psql "$db" -qc "\\copy (SELECT * FROM $t) TO '$dump/$t'"; done
copied=$(cat "$dump"/* | wc -l)
psql "$db" -qc "TRUNCATE $(IFS=,; echo "${derived[*]}")"
start=$(date +%s.%N)
for t in "${derived[@]}"; do echo "\\copy $t FROM '$dump/$t'"; done | psql "$db" -q -1 -v ON_ERROR_STOP=1
end=$(date +%s.%N)
rm -rf "$dump"
cp_rate=$(python3 -c "print(f'{$stored / ($end - $start):.1f}')")
echo "COPY of the same derived rows ($copied rows): $(python3 -c "print(f'{$end - $start:.2f}')") s = $cp_rate responses/s; replay reaches $(python3 -c "print(f'{$rp_rate / $cp_rate:.2f}')") of it"

pipelines="$(mktemp -d)"
out="$("$venv/bin/python" scripts/bench-peer-dlt.py --base "http://127.0.0.1:$port/" \
    --database-url "$db" --first-clip "$FIRST_CLIP" --n "$N" --pipelines-dir "$pipelines")"
rm -rf "$pipelines"
echo "$out" | grep -v '^DLT_'
dlt_rate="$(echo "$out" | sed -n 's/^DLT_RESPONSES_PER_SECOND=//p')"
echo "ratio soundtrend replay / dlt, load against load: $(python3 -c "print(f'{$rp_rate / $dlt_rate:.2f}')")x (goal >= 10x)"
echo "ratio soundtrend poll --due (HTTP included) / dlt load: $(python3 -c "print(f'{$st_rate / $dlt_rate:.2f}')")x"
echo "ratio COPY of the derived rows / dlt load (the most any loader of these rows can reach): $(python3 -c "print(f'{$cp_rate / $dlt_rate:.2f}')")x"
psql "$server" -qc "DROP DATABASE IF EXISTS soundtrend_peer WITH (FORCE)" >/dev/null
