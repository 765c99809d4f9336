#!/usr/bin/env bash
# Stop what start_samp_peers.sh started, by the PIDs it recorded.
rundir="${1:?usage: stop_samp_peers.sh RUNDIR}"
for name in aladin topcat xvfb hub; do
    pidfile="$rundir/$name.pid"
    [ -s "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$name ($pid) still running 5 s after SIGTERM; sending SIGKILL" >&2
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
done
