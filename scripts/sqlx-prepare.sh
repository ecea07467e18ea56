#!/usr/bin/env bash
# Regenerates (or with --check, verifies) the committed `.sqlx/` query metadata that lets every
# build check its SQL without a database (SQLX_OFFLINE=true in .cargo/config.toml).
#
#   scripts/sqlx-prepare.sh           after changing a query or adding a migration
#   scripts/sqlx-prepare.sh --check   in CI: fails when `.sqlx/` is stale
#
# It migrates a scratch database `soundtrend_sqlx` on the server $DATABASE_URL points at (or the
# one scripts/pg-up.sh finds or starts) and runs `cargo sqlx prepare` against it; the database stays,
# so `SQLX_OFFLINE=false DATABASE_URL=…/soundtrend_sqlx cargo build` can check queries live. sqlx-cli is
# installed, pinned, when missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SQLX_CLI_VERSION=0.9.0
if ! cargo sqlx --version 2>/dev/null | grep -q "$SQLX_CLI_VERSION"; then
    echo "sqlx-prepare.sh: installing sqlx-cli $SQLX_CLI_VERSION" >&2
    cargo install sqlx-cli --version "$SQLX_CLI_VERSION" --locked \
        --no-default-features --features postgres,rustls
fi

server="${DATABASE_URL:-$(scripts/pg-up.sh)}"
# The same server, database `soundtrend_sqlx` (any database name and query string replaced).
base="${server%%\?*}"
scratch="${base%/*}/soundtrend_sqlx"

export DATABASE_URL="$scratch"
cargo sqlx database drop -y >/dev/null 2>&1 || true
cargo sqlx database create
cargo sqlx migrate run --source migrations >/dev/null
SQLX_OFFLINE=false cargo sqlx prepare "$@" -- --all-targets

