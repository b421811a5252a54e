#!/usr/bin/env bash
# `make demo`: the main job end to end on the embedded defaults, as far as the platform goes today:
# kernel (cached) → build both examples → push them to a hub and pull them back → run hello-c in
# the foreground → run sensor-agg (as pulled from the hub) detached with a published port, feed
# it readings, read its stats and results → stop and remove it.
set -euo pipefail
cd "$(dirname "$0")/.."
UKEDGE=${UKEDGE:-.venv/bin/ukedge}
PORT=${DEMO_PORT:-18080}
HUB_PORT=${DEMO_HUB_PORT:-15000}
HUB="127.0.0.1:$HUB_PORT"
HUB_DATA=$(mktemp -d)
HUB_PID=
cleanup() {
  [ -n "$HUB_PID" ] && kill "$HUB_PID" 2>/dev/null
  rm -rf "$HUB_DATA" "$HUB_DATA.log"
}
trap cleanup EXIT
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "doctor: what this host offers"
$UKEDGE doctor

step "build the examples (reproducible: a rebuild gives the same digest)"
$UKEDGE build examples/hello-c -t hello-c:1
$UKEDGE build examples/sensor-agg -t sensor-agg:1
$UKEDGE images

step "start a hub on $HUB and push both images (only the blobs it lacks: the kernel layer once)"
$UKEDGE hub serve --addr "$HUB" --data "$HUB_DATA" --log-format text 2>"$HUB_DATA.log" &
HUB_PID=$!
for _ in $(seq 1 100); do curl -fsS "http://$HUB/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
for app in hello-c sensor-agg; do
  $UKEDGE tag "$app:1" "$HUB/demo/$app:1"
  $UKEDGE push -q "$HUB/demo/$app:1"
done
$UKEDGE search sensor --registry "$HUB"

step "drop the local copy of sensor-agg and pull it back (every blob digest-verified)"
$UKEDGE rmi "$HUB/demo/sensor-agg:1" >/dev/null
$UKEDGE pull -q "$HUB/demo/sensor-agg:1"
$UKEDGE images

step "run hello-c in the foreground; its exit status becomes ours"
set +e
$UKEDGE run --rm -e HELLO_EXIT=3 hello-c:1 demo
status=$?
set -e
echo "hello-c exited with status $status"
[ "$status" -eq 3 ] || { echo "expected exit status 3" >&2; exit 1; }

step "run sensor-agg detached, guest port 8080 published on 127.0.0.1:$PORT"
$UKEDGE rm -f demo-sensor >/dev/null 2>&1 || true
$UKEDGE run -d --name demo-sensor -p "$PORT:8080" -e WINDOW_SECONDS=2 "$HUB/demo/sensor-agg:1"
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
$UKEDGE ps

step "send readings and read the sliding-window stats"
curl -fsS -X POST -H 'Content-Type: application/json' \
  -d '[{"sensor":"t1","value":21.5},{"sensor":"t1","value":22.5},{"sensor":"h1","value":40}]' \
  "http://127.0.0.1:$PORT/readings"; echo
curl -fsS "http://127.0.0.1:$PORT/stats"; echo

step "closed windows arrive on the host through the results device"
sleep 3
curl -fsS -X POST -d '{"sensor":"t1","value":23}' "http://127.0.0.1:$PORT/readings" >/dev/null
$UKEDGE logs --results demo-sensor

step "console log, then a graceful stop (SIGTERM reaches the app) and removal"
$UKEDGE logs demo-sensor | tail -n 5
$UKEDGE stop demo-sensor
$UKEDGE ps -a
$UKEDGE rm demo-sensor
step "done"
