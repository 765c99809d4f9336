#!/usr/bin/env bash
# Start real SAMP peers on this machine only: a pyvo.samp hub on 127.0.0.1 with a
# private lockfile, an Xvfb display, and TOPCAT on it (optionally Aladin). Installs
# the Debian packages if needed. PIDs go to RUNDIR so stop_samp_peers.sh stops
# exactly what was started.
#
# usage: start_samp_peers.sh RUNDIR PYTHON [--aladin]
#   PYTHON  a Python with pyvo (runs the hub and the readiness probe)
#   --aladin  also start Aladin 12 (Debian package `aladin`); waits at most
#             ALADIN_START_TIMEOUT seconds (default 90) for it to subscribe and answer.
# Prints the environment the tests need: SAMP_HUB and DISPLAY.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rundir="$1"; python="$2"; with_aladin="${3:-}"
mkdir -p "$rundir/home"
say() { echo "[samp $(date +%T)] $*" >&2; }
export DEBIAN_FRONTEND=noninteractive

packages=()
command -v topcat >/dev/null || packages+=(topcat)
command -v stilts >/dev/null || packages+=(stilts)
command -v Xvfb >/dev/null || packages+=(xvfb)
[ "$with_aladin" = "--aladin" ] && ! command -v aladin >/dev/null && packages+=(aladin)
if [ "${#packages[@]}" -gt 0 ]; then
    say "installing ${packages[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

start=$(date +%s)
lock="$rundir/samp-lock"
"$python" -u "$here/run_hub.py" "$lock" > "$rundir/hub.log" 2>&1 &
echo $! > "$rundir/hub.pid"
for _ in $(seq 1 100); do grep -q HUB_READY "$rundir/hub.log" && break; sleep 0.1; done
grep -q HUB_READY "$rundir/hub.log" || { cat "$rundir/hub.log" >&2; exit 1; }
# Java applications that ignore SAMP_HUB (Aladin) look for ~/.samp.
cp "$lock" "$rundir/home/.samp"

display=""
for n in $(seq 99 140); do
    if [ ! -e "/tmp/.X11-unix/X$n" ] && [ ! -e "/tmp/.X$n-lock" ]; then display=":$n"; break; fi
done
[ -n "$display" ] || { echo "no free X display number" >&2; exit 1; }
Xvfb "$display" -nolisten tcp -screen 0 1280x900x24 > "$rundir/xvfb.log" 2>&1 &
echo $! > "$rundir/xvfb.pid"
for _ in $(seq 1 50); do [ -S "/tmp/.X11-unix/X${display#:}" ] && break; sleep 0.1; done
[ -S "/tmp/.X11-unix/X${display#:}" ] || { cat "$rundir/xvfb.log" >&2; exit 1; }

export SAMP_HUB="std-lockurl:file://$lock" DISPLAY="$display"
# exec: the recorded PID is the JVM itself, not the sh wrapper /usr/bin/topcat.
# jsamp.localhost keeps TOPCAT's own SAMP server on the loopback address.
JAVA_TOOL_OPTIONS="-Duser.home=$rundir/home" bash -c 'exec java -Djsamp.localhost=127.0.0.1 \
    -Djava.awt.headless=false -classpath /usr/share/java/starlink-topcat.jar \
    uk.ac.starlink.topcat.Driver' > "$rundir/topcat.log" 2>&1 &
echo $! > "$rundir/topcat.pid"
"$python" "$here/wait_client.py" "$lock" topcat table.load.votable 120 >&2 \
    || { cat "$rundir/topcat.log" >&2; exit 1; }

if [ "$with_aladin" = "--aladin" ]; then
    # Aladin ignores SAMP_HUB: it reads the hub from user.home/.samp. -local, -nolog and
    # -noreleasetest keep it offline; it still tries a few CDS web pages at start, so its
    # HTTP(S) goes to a proxy on 127.0.0.1:9 (nothing listens: refused at once, and the
    # outside host name is never even looked up). Loopback stays direct (nonProxyHosts).
    aladin_opts="-Duser.home=$rundir/home -Djsamp.localhost=127.0.0.1 -Dsamp.localhost=127.0.0.1"
    aladin_opts="$aladin_opts -Djava.net.useSystemProxies=false -Dhttp.proxyHost=127.0.0.1"
    aladin_opts="$aladin_opts -Dhttp.proxyPort=9 -Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort=9"
    JAVA_TOOL_OPTIONS="$aladin_opts" bash -c 'exec aladin -local -noreleasetest \
        -nolog -noplugin' > "$rundir/aladin.log" 2>&1 &
    echo $! > "$rundir/aladin.pid"
    # Subscribed to every MType the tests use, and answering samp.app.ping.
    "$python" "$here/wait_client.py" "$lock" aladin script.aladin.send \
        "${ALADIN_START_TIMEOUT:-90}" >&2 \
        || { say "Aladin did not become ready within ${ALADIN_START_TIMEOUT:-90} s"; \
             cat "$rundir/aladin.log" >&2; exit 1; }
fi
say "peers ready in $(( $(date +%s) - start )) s"
echo "export SAMP_HUB=$SAMP_HUB DISPLAY=$display"
