#!/usr/bin/env bash
# The whole test suite: scripts/test.sh [extra cargo test arguments]
#
# Database tests use $DATABASE_URL. When it is unset, scripts/pg-up.sh finds or starts a local
# PostgreSQL; if that fails too, DATABASE_URL stays unset and the tests fall back to
# testcontainers (which needs Docker).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -z "${DATABASE_URL:-}" ]]; then
    if url="$(scripts/pg-up.sh)"; then
        export DATABASE_URL="$url"
        echo "test.sh: DATABASE_URL=$DATABASE_URL" >&2
    else
        echo "test.sh: no PostgreSQL available via scripts/pg-up.sh; database tests will try testcontainers (Docker)" >&2
    fi
fi

exec cargo test --all-targets "$@"
