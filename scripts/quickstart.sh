#!/usr/bin/env bash
# The README's first command: soundtrend end to end on this machine.
#
# Finds (or starts) a local Postgres, builds soundtrend, and runs `soundtrend quickstart`, which
# creates the database, migrates, watches the providers' sample clip and polls it, then shows what
# landed. Without KEYAPI_API_KEY (or ECHOTIK_USERNAME/ECHOTIK_PASSWORD with provider echotik) it
# polls a local demo API; with them it polls the real provider and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

DATABASE_URL="$(scripts/pg-up.sh)"
export DATABASE_URL
cargo build --quiet --bin soundtrend
exec target/debug/soundtrend quickstart "$@"
