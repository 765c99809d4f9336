#!/usr/bin/env bash
# Stop what start_tap.sh started, by the PIDs it recorded in RUNDIR.
set -u
rundir="$1"
stop_pid() {  # name pidfile signal
    [ -s "$2" ] || return 0
    pid="$(cat "$2")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "-$3" "$pid" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
        echo "[tap] stopped $1 (pid $pid)"
    fi
    rm -f "$2"
}
stop_pid DaCHS "$rundir/dachs.pid" TERM
if [ -f "$rundir/postgres.started" ]; then
    # SIGINT is PostgreSQL's "fast shutdown".
    stop_pid PostgreSQL "$rundir/postgres.pid" INT
    rm -f "$rundir/postgres.started"
fi
exit 0
