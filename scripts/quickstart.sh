#!/usr/bin/env bash
# The README's first command: soundtrend end to end on this machine.
#
# Finds (or starts) a local Postgres, builds soundtrend, and runs `soundtrend quickstart`, which
# creates the database, migrates, watches the providers' sample clip and polls it, then shows what
# landed. Without KEYAPI_API_KEY (or ECHOTIK_USERNAME/ECHOTIK_PASSWORD with provider echotik) it
# polls a local demo API and keeps the made-up data in its own database (soundtrend_demo;
# `scripts/quickstart.sh --reset` drops it); with them it polls the real provider into the
# configured database and says so. Arguments go to `soundtrend quickstart`.
#
# `cargo run` finds the binary wherever CARGO_TARGET_DIR puts it.
set -euo pipefail
cd "$(dirname "$0")/.."

DATABASE_URL="$(scripts/pg-up.sh)"
export DATABASE_URL
echo "quickstart: building soundtrend (the first build takes about 5 minutes on a 2-core machine)" >&2
exec cargo run --quiet --bin soundtrend -- quickstart "$@"
