#!/usr/bin/env bash
# Make sure a PostgreSQL server answers and print a usable DATABASE_URL.
#
#   DATABASE_URL="$(scripts/pg-up.sh)"   # find or start a server
#   scripts/pg-up.sh --stop              # stop the project-local cluster, if running
#
# stdout carries exactly one line, the URL, so the script can be used in $(...); everything
# else goes to stderr. In order, it uses:
#   1. $DATABASE_URL, when it is set and the server behind it answers;
#   2. a server on 127.0.0.1:5432 that lets user postgres in without a password;
#   3. a project-local cluster it creates and starts itself (trust auth, 127.0.0.1 only).
#
# Environment:
#   SOUNDTREND_PGDATA           data dir of the local cluster (default: <repo>/.local/pg/data,
#                               or /tmp/soundtrend-pg/data when run as root)
#   SOUNDTREND_PGPORT           port of the local cluster (default 54329)
#   SOUNDTREND_PG_FORCE_LOCAL=1 skip steps 1 and 2 and always use the local cluster
set -euo pipefail

DB_NAME=soundtrend
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf 'pg-up: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    sed -n '2,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
}

MODE=up
case "${1:-}" in
    "") ;;
    --stop) MODE=stop ;;
    -h | --help) usage; exit 0 ;;
    *) usage; die "unknown argument: $1" ;;
esac

IS_ROOT=no
[[ "$(id -u)" == 0 ]] && IS_ROOT=yes

# --- locating the PostgreSQL binaries ------------------------------------------------------------

# Directory holding initdb/pg_ctl/postgres, or empty. pg_config knows where the server binaries
# of the installed version live; Debian keeps them off PATH under /usr/lib/postgresql/<ver>/bin,
# so fall back to the newest of those.
find_bindir() {
    local dir
    if command -v pg_config >/dev/null 2>&1; then
        dir="$(pg_config --bindir 2>/dev/null || true)"
        if [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
            printf '%s\n' "$dir"
            return
        fi
    fi
    # sort -V so that 16 beats 9.6; tail picks the newest.
    dir="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin 2>/dev/null \
        | sort -V | tail -n 1 || true)"
    if [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
        printf '%s\n' "$dir"
    fi
}

BINDIR="$(find_bindir)"

# A client tool (psql, pg_isready): from PATH if there, else next to the server binaries.
client() {
    local name="$1"
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
    elif [[ -n "$BINDIR" && -x "$BINDIR/$name" ]]; then
        printf '%s\n' "$BINDIR/$name"
    fi
}

PG_ISREADY="$(client pg_isready)"
PSQL="$(client psql)"

# Never let a probe hang on a dead host or a password prompt.
export PGCONNECT_TIMEOUT=5

isready() { [[ -n "$PG_ISREADY" ]] && "$PG_ISREADY" -q -t 3 "$@" >/dev/null 2>&1; }
# -X: ignore ~/.psqlrc, -w: never prompt for a password (fail instead).
psql_ok() { [[ -n "$PSQL" ]] && "$PSQL" -X -w -Atq "$@" -c 'select 1' >/dev/null 2>&1; }

# Create the soundtrend database when the server lets us. Best effort: the daemon creates it on
# first connect anyway, so a failure here is only worth a warning.
ensure_database() {
    local host="$1" port="$2" exists
    [[ -n "$PSQL" ]] || return 0
    exists="$("$PSQL" -X -w -Atq -h "$host" -p "$port" -U postgres -d postgres \
        -c "select 1 from pg_database where datname = '$DB_NAME'" 2>/dev/null || true)"
    if [[ "$exists" != 1 ]]; then
        if "$PSQL" -X -w -q -h "$host" -p "$port" -U postgres -d postgres \
            -c "create database $DB_NAME" >/dev/null 2>&1; then
            log "created database $DB_NAME on $host:$port"
        else
            log "warning: could not create database $DB_NAME on $host:$port (the daemon will try)"
        fi
    fi
}

# --- the project-local cluster -------------------------------------------------------------------

PGPORT_LOCAL="${SOUNDTREND_PGPORT:-54329}"
[[ "$PGPORT_LOCAL" =~ ^[0-9]+$ ]] || die "SOUNDTREND_PGPORT must be a number, got '$PGPORT_LOCAL'"

if [[ -n "${SOUNDTREND_PGDATA:-}" ]]; then
    PGDATA_LOCAL="$SOUNDTREND_PGDATA"
elif [[ "$IS_ROOT" == yes ]]; then
    # initdb and postgres refuse to run as root, so the cluster belongs to the postgres user, and
    # that user must be able to reach it. The repo may sit under a directory postgres cannot
    # traverse (/root, a 0700 home), so as root use a neutral place everyone can reach.
    PGDATA_LOCAL=/tmp/soundtrend-pg/data
else
    PGDATA_LOCAL="$REPO_ROOT/.local/pg/data"
fi
# pg_ctl wants an absolute path in its messages and the socket dir must be absolute.
[[ "$PGDATA_LOCAL" == /* ]] || PGDATA_LOCAL="$PWD/$PGDATA_LOCAL"
PGDATA_LOCAL="${PGDATA_LOCAL%/}"
SOCKDIR="$(dirname "$PGDATA_LOCAL")"
LOGFILE="$SOCKDIR/postgres.log"

# The paths end up inside pg_ctl's -o string, which goes through /bin/sh; a single quote there
# would break the quoting below.
[[ "$PGDATA_LOCAL" != *\'* ]] || die "the data dir path must not contain a single quote: $PGDATA_LOCAL"

# Run a server-side command as the right user: ourselves normally, postgres when we are root.
# cd / first so postgres is not left in a working directory it may not be allowed to read.
as_pg() {
    if [[ "$IS_ROOT" == yes ]]; then
        if command -v runuser >/dev/null 2>&1; then
            (cd / && runuser -u postgres -- "$@")
        else
            local cmd
            printf -v cmd '%q ' "$@"
            (cd / && su postgres -s /bin/sh -c "$cmd")
        fi
    else
        "$@"
    fi
}

local_running() {
    as_pg "$BINDIR/pg_ctl" -D "$PGDATA_LOCAL" status >/dev/null 2>&1
}

# The port the running cluster actually listens on (line 4 of postmaster.pid); it may differ
# from SOUNDTREND_PGPORT if the cluster was started earlier with another value.
running_port() {
    local port
    port="$(sed -n 4p "$PGDATA_LOCAL/postmaster.pid" 2>/dev/null || true)"
    if [[ "$port" =~ ^[0-9]+$ ]]; then printf '%s\n' "$port"; else printf '%s\n' "$PGPORT_LOCAL"; fi
}

stop_local() {
    if [[ -z "$BINDIR" ]]; then
        log "no PostgreSQL server binaries found, so no local cluster to stop"
        return 0
    fi
    if [[ ! -d "$PGDATA_LOCAL" ]]; then
        log "no local cluster at $PGDATA_LOCAL"
        return 0
    fi
    if local_running; then
        log "stopping the local cluster at $PGDATA_LOCAL"
        # fast: roll back open transactions instead of waiting for clients to disconnect.
        as_pg "$BINDIR/pg_ctl" -D "$PGDATA_LOCAL" -m fast -w stop >&2
    else
        log "the local cluster at $PGDATA_LOCAL is not running"
    fi
}

# Prepare the cluster's parent directory so that the user running postgres owns it.
prepare_parent() {
    if [[ "$IS_ROOT" == yes ]]; then
        getent passwd postgres >/dev/null 2>&1 \
            || die "running as root, but there is no 'postgres' system user to run the server as (initdb and postgres refuse to run as root). Install the Debian 'postgresql' package, run as a normal user, or set DATABASE_URL."
        # A pre-made symlink in /tmp would let chown below hand someone else's files to postgres.
        [[ ! -L "$SOCKDIR" ]] || die "$SOCKDIR is a symlink; refusing to use it"
        mkdir -p "$SOCKDIR"
        chown postgres: "$SOCKDIR"
        chmod 0755 "$SOCKDIR"
        # mkdir -p above created any missing ancestors as root with the umask; check that
        # postgres can actually get there (every ancestor traversable, the dir writable).
        as_pg test -x "$SOCKDIR" -a -w "$SOCKDIR" \
            || die "user postgres cannot reach $SOCKDIR (a parent directory is not traversable); set SOUNDTREND_PGDATA to a path under /tmp, e.g. /tmp/soundtrend-pg/data"
    else
        mkdir -p "$SOCKDIR"
    fi
}

start_local() {
    [[ -n "$BINDIR" ]] || die "no PostgreSQL server binaries found (looked at 'pg_config --bindir' and /usr/lib/postgresql/*/bin). Install the Debian 'postgresql' package (apt-get install postgresql), or set DATABASE_URL to a server that answers."
    [[ -n "$PG_ISREADY" ]] || die "pg_isready not found; install the Debian 'postgresql-client' package"

    prepare_parent

    if [[ ! -f "$PGDATA_LOCAL/PG_VERSION" ]]; then
        log "creating a local cluster in $PGDATA_LOCAL ($("$BINDIR/initdb" --version 2>/dev/null || echo initdb))"
        # trust: local development/CI only, and the server listens on 127.0.0.1 only.
        # --no-locale: a fresh container often has LANG set to a locale that is not generated,
        # which makes initdb fail; the C locale with UTF8 encoding always works.
        as_pg "$BINDIR/initdb" -D "$PGDATA_LOCAL" -U postgres --auth=trust -E UTF8 --no-locale \
            --no-instructions >&2
    fi

    if local_running; then
        log "the local cluster at $PGDATA_LOCAL is already running"
    else
        # A unix socket path longer than ~107 bytes is rejected and postgres would not start;
        # we connect over TCP anyway, so then do without the socket.
        local sock="$SOCKDIR"
        if (( ${#SOCKDIR} + 20 > 107 )); then
            log "socket dir path too long for a unix socket; listening on TCP only"
            sock=""
        fi
        log "starting the local cluster on 127.0.0.1:$PGPORT_LOCAL (log: $LOGFILE)"
        # pg_ctl prints progress on stdout, which must stay clean, hence >&2.
        if ! as_pg "$BINDIR/pg_ctl" -D "$PGDATA_LOCAL" \
            -o "-p $PGPORT_LOCAL -k '$sock' -c listen_addresses=127.0.0.1" \
            -l "$LOGFILE" -t 30 -w start >&2; then
            log "pg_ctl start failed; last lines of $LOGFILE:"
            tail -n 20 "$LOGFILE" >&2 2>/dev/null || true
            exit 1
        fi
    fi

    local port
    port="$(running_port)"
    # pg_ctl -w waits for the postmaster, but wait for a real TCP answer before handing out a URL.
    local i
    for ((i = 0; i < 30; i++)); do
        if isready -h 127.0.0.1 -p "$port"; then
            ensure_database 127.0.0.1 "$port"
            printf 'postgres://postgres@127.0.0.1:%s/%s\n' "$port" "$DB_NAME"
            return 0
        fi
        sleep 1
    done
    log "the local cluster did not answer on 127.0.0.1:$port within 30 s; last lines of $LOGFILE:"
    tail -n 20 "$LOGFILE" >&2 2>/dev/null || true
    exit 1
}

# --- main ----------------------------------------------------------------------------------------

if [[ "$MODE" == stop ]]; then
    stop_local
    exit 0
fi

if [[ "${SOUNDTREND_PG_FORCE_LOCAL:-}" != 1 ]]; then
    # 1. The caller's own server.
    if [[ -n "${DATABASE_URL:-}" ]]; then
        if isready -d "$DATABASE_URL" || psql_ok -d "$DATABASE_URL"; then
            log "using DATABASE_URL from the environment"
            printf '%s\n' "$DATABASE_URL"
            exit 0
        fi
        log "warning: DATABASE_URL is set but its server does not answer; looking elsewhere"
    fi

    # 2. A server on the standard port that lets postgres in without a password (a CI service
    #    container, or a developer's trust-configured install).
    if isready -h 127.0.0.1 -p 5432 && psql_ok -h 127.0.0.1 -p 5432 -U postgres -d postgres; then
        log "using the server on 127.0.0.1:5432"
        ensure_database 127.0.0.1 5432
        printf 'postgres://postgres@127.0.0.1:5432/%s\n' "$DB_NAME"
        exit 0
    fi
fi

# 3. Our own cluster.
start_local
