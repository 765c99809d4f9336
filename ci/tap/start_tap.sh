#!/usr/bin/env bash
# Start a real TAP service (GAVO DaCHS + PostgreSQL) on 127.0.0.1 serving the test
# mirror tables (q.rd). Installs the Debian packages if needed. Records what it
# started in RUNDIR so that stop_tap.sh stops exactly that, by PID.
#
# usage: start_tap.sh RUNDIR PYTHON [DATA_DIR]
#   PYTHON   a Python with numpy and astropy (writes the table data)
#   DATA_DIR training catalogs (real APOKASC-2 rows); optional
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rundir="$1"; python="$2"; data_dir="${3:-}"
port="${STELLAR_ML_AGES_TAP_PORT:-8080}"
mkdir -p "$rundir"
say() { echo "[tap $(date +%T)] $*"; }
export DEBIAN_FRONTEND=noninteractive

if ! command -v dachs >/dev/null || ! command -v pg_ctlcluster >/dev/null; then
    say "installing postgresql and gavodachs2-server"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
# No systemd here and policy-rc.d forbids service starts: PostgreSQL is started by
# hand, and it must be up before DaCHS's package configuration runs ('dachs init').
cluster_version="$(pg_lsclusters -h | awk 'NR==1 {print $1}')"
cluster_name="$(pg_lsclusters -h | awk 'NR==1 {print $2}')"
if ! pg_ctlcluster "$cluster_version" "$cluster_name" status >/dev/null 2>&1; then
    say "starting PostgreSQL $cluster_version/$cluster_name"
    pg_ctlcluster "$cluster_version" "$cluster_name" start
    echo "$cluster_version $cluster_name" > "$rundir/postgres.started"
fi
head -1 "/var/lib/postgresql/$cluster_version/$cluster_name/postmaster.pid" > "$rundir/postgres.pid"
if ! command -v dachs >/dev/null; then
    apt-get install -y -qq --no-install-recommends gavodachs2-server >/dev/null
fi
dpkg --configure -a

cat > /etc/gavo.rc <<RC
[web]
bindAddress: 127.0.0.1
serverPort: $port
serverURL: http://127.0.0.1:$port
RC

inputs=/var/gavo/inputs/smatest
install -d -o dachsroot -g gavo "$inputs/data"
install -o dachsroot -g gavo -m 644 "$here/q.rd" "$inputs/q.rd"
"$python" "$here/make_tap_data.py" "$inputs/data" $data_dir
say "importing the test tables"
if ! (cd "$inputs" && dachs imp q > "$rundir/dachs-import.log" 2>&1); then
    cat "$rundir/dachs-import.log" >&2
    echo "dachs imp failed" >&2
    exit 1
fi

if [ -s /var/gavo/state/web.pid ] && kill -0 "$(cat /var/gavo/state/web.pid)" 2>/dev/null; then
    dachs serve restart >/dev/null
else
    dachs serve start >/dev/null
fi
available() {  # the venv's Python, so that curl need not be installed
    "$python" - "$1" <<'PY'
import sys, urllib.request
try:
    body = urllib.request.urlopen(sys.argv[1], timeout=2).read().decode()
except OSError:
    sys.exit(1)
sys.exit(0 if "<avl:available>true" in body else 1)
PY
}
for _ in $(seq 1 150); do
    if available "http://127.0.0.1:$port/tap/availability"; then
        cp /var/gavo/state/web.pid "$rundir/dachs.pid"
        say "TAP up at http://127.0.0.1:$port/tap (pid $(cat "$rundir/dachs.pid"))"
        exit 0
    fi
    sleep 0.2
done
echo "DaCHS did not become available on port $port" >&2
exit 1
