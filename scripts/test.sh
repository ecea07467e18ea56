#!/usr/bin/env bash
# The whole test suite: scripts/test.sh [extra cargo test arguments]
#
# Database tests use $DATABASE_URL. When it is unset, scripts/pg-up.sh finds or starts a local
# PostgreSQL; if that fails too, DATABASE_URL stays unset and the tests fall back to
# testcontainers (which needs Docker).
# The browser test runs when /usr/bin/chromium and /usr/bin/chromedriver exist.
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

# The browser test (tests/browser.rs) needs Debian's chromium and chromium-driver; .ci/run
# installs them. Elsewhere, without them, it is skipped, and this says so.
if [[ -z "${SOUNDTREND_BROWSER_TESTS:-}" ]] && ! { [[ -x /usr/bin/chromium ]] && [[ -x /usr/bin/chromedriver ]]; }; then
    export SOUNDTREND_BROWSER_TESTS=skip
    echo "test.sh: SKIPPING the browser test: install chromium and chromium-driver (Debian) to run it" >&2
fi

exec cargo test --all-targets "$@"
