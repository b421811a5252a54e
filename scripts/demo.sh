#!/usr/bin/env bash
# `make demo`: the main job end to end on the embedded defaults, as far as the platform goes today:
# kernel (cached) → build both examples → push them to a hub and pull them back → run hello-c in
# the foreground → build hello-c for linux/amd64 and linux/arm64 (an index), push it, pull this
# node's platform only, run the arm64 one emulated → run sensor-agg (as pulled from the hub) detached with a published port, feed
# it readings, read its stats and results → stop and remove it → sign sensor-agg with a new key
# → start a host agent (edge node) that pulls from the hub and runs only signed images (an
# unsigned one is refused), run sensor-agg on it with `--host`, kill -9 the agent, start it
# again and find the instance still running → live-migrate it to a second agent with its
# memory (the readings it counted) → an on-demand instance that boots on the first request →
# a fleet of one with `ukedge up` (controller + hub + local agent in one process): push
# sensor-agg to its hub, deploy two replicas through the controller, post readings to both and
# watch their results stream back to the centre, then stop it all.
set -euo pipefail
cd "$(dirname "$0")/.."
UKEDGE=${UKEDGE:-.venv/bin/ukedge}
PORT=${DEMO_PORT:-18080}
HUB_PORT=${DEMO_HUB_PORT:-15000}
HUB="127.0.0.1:$HUB_PORT"
HUB_DATA=$(mktemp -d)
HUB_PID=
AGENT_PORT=${DEMO_AGENT_PORT:-17600}
AGENT_DATA=$(mktemp -d)
AGENT_PID=
AGENT2_PORT=$((AGENT_PORT + 5))
AGENT2_DATA=$(mktemp -d)
AGENT2_PID=
KEYS=$(mktemp -d)
UP_DATA=$(mktemp -d)
UP_PID=
FOLLOW_PID=
cleanup() {
  status=$?
  set +e
  [ -n "$FOLLOW_PID" ] && kill "$FOLLOW_PID" 2>/dev/null
  if [ -n "$UP_PID" ]; then
    # `up` stops the instances its controller deployed before it exits: wait for that.
    kill -TERM "$UP_PID" 2>/dev/null
    for _ in $(seq 1 600); do kill -0 "$UP_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$UP_PID" 2>/dev/null
  fi
  [ -n "$HUB_PID" ] && kill "$HUB_PID" 2>/dev/null
  if [ -n "$AGENT_PID" ]; then
    # Whatever a failed step left behind: the VMs outlive the agent by design.
    UKEDGE_HOST="unix://$AGENT_DATA/agent.sock" $UKEDGE rm -f edge-sensor edge-ondemand >/dev/null 2>&1
    kill "$AGENT_PID" 2>/dev/null
  fi
  if [ -n "$AGENT2_PID" ]; then
    UKEDGE_HOST="unix://$AGENT2_DATA/agent.sock" $UKEDGE rm -f edge-sensor >/dev/null 2>&1
    kill "$AGENT2_PID" 2>/dev/null
  fi
  rm -rf "$HUB_DATA" "$HUB_DATA.log" "$AGENT_DATA" "$AGENT_DATA.log" "$KEYS"
  rm -rf "$AGENT2_DATA" "$AGENT2_DATA.log"
  rm -rf "$UP_DATA" "$UP_DATA.out" "$UP_DATA.log"
  exit "$status"
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

step "hello-c for two platforms: an OCI index; a node pulls only its own, arm64 runs emulated"
$UKEDGE build examples/hello-c -t hello-c:multi --platform linux/amd64,linux/arm64
$UKEDGE tag hello-c:multi "$HUB/demo/hello-c:multi"
$UKEDGE push -q "$HUB/demo/hello-c:multi"
$UKEDGE rmi hello-c:multi "$HUB/demo/hello-c:multi" >/dev/null
$UKEDGE pull -q "$HUB/demo/hello-c:multi"
$UKEDGE images
# On purpose: the arm64 manifest is pulled now and its VM runs on qemu-system-aarch64 (TCG).
$UKEDGE run --rm --platform linux/arm64 -e HELLO_EXIT=0 "$HUB/demo/hello-c:multi" demo
$UKEDGE images

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

step "sign sensor-agg with a new key (cosign's format, stored in the hub beside the image)"
export UKEDGE_KEY_PASSWORD=demo
$UKEDGE key generate --output-key-prefix "$KEYS/demo"
$UKEDGE sign "$HUB/demo/sensor-agg:1" --key "$KEYS/demo.key"
$UKEDGE verify "$HUB/demo/sensor-agg:1" --key "$KEYS/demo.pub"
unset UKEDGE_KEY_PASSWORD
# The nodes' policy: images of demo/* from this hub must carry a signature by that key.
cat >"$KEYS/policy.toml" <<POLICY
[[rule]]
registry = "$HUB"
repository = "demo/*"
keys = ["demo.pub"]
unsigned = "reject"
POLICY

# start_agent NAME PORT DATA: an edge node that pulls from the hub and enforces the policy.
start_agent() {
  local name=$1 port=$2 data=$3
  $UKEDGE host serve --addr "127.0.0.1:$port" --data "$data" --hub "$HUB" --name "$name" \
    --labels site=demo --policy "$KEYS/policy.toml" --log-format text 2>>"$data.log" &
  STARTED_PID=$!
  for _ in $(seq 1 200); do
    # Our agent's socket, not just any agent on the port.
    [ -S "$data/agent.sock" ] && curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && return
    kill -0 "$STARTED_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "the agent $name did not start; its log:" >&2; cat "$data.log" >&2; exit 1
}

step "start a host agent (edge node edge-1) that pulls from the hub at $HUB, signed images only"
start_agent edge-1 "$AGENT_PORT" "$AGENT_DATA"
AGENT_PID=$STARTED_PID
export UKEDGE_HOST="http://127.0.0.1:$AGENT_PORT"
UKEDGE_HOST_TOKEN=$(cat "$AGENT_DATA/token")
export UKEDGE_HOST_TOKEN
$UKEDGE info

step "run sensor-agg on the agent: the short name is pulled from its hub first"
AGENT_APP_PORT=$((PORT + 1))
$UKEDGE run -d --name edge-sensor --restart on-failure:3 -p "$AGENT_APP_PORT:8080" demo/sensor-agg:1
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$AGENT_APP_PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
$UKEDGE ps
$UKEDGE images
echo "hello-c was pushed unsigned; the node refuses it:"
if $UKEDGE run --rm demo/hello-c:1 2>&1; then echo "expected a refusal" >&2; exit 1; fi

step "kill -9 the agent and start it again: the VM kept running and is re-adopted"
kill -9 "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null || true
curl -fsS "http://127.0.0.1:$AGENT_APP_PORT/healthz"; echo " (served while no agent runs)"
start_agent edge-1 "$AGENT_PORT" "$AGENT_DATA"
AGENT_PID=$STARTED_PID
$UKEDGE ps
$UKEDGE stats

step "live-migrate sensor-agg to a second node (edge-2) with its memory: the counts move along"
start_agent edge-2 "$AGENT2_PORT" "$AGENT2_DATA"
AGENT2_PID=$STARTED_PID
curl -fsS -X POST -H 'Content-Type: application/json' \
  -d '[{"sensor":"t1","value":20},{"sensor":"t1","value":21},{"sensor":"t2","value":5}]' \
  "http://127.0.0.1:$AGENT_APP_PORT/readings" >/dev/null
BEFORE=$(curl -fsS "http://127.0.0.1:$AGENT_APP_PORT/healthz")
echo "before, on edge-1: $BEFORE"
MOVED_PORT=$((PORT + 5))
$UKEDGE migrate edge-sensor --to "http://127.0.0.1:$AGENT2_PORT" \
  --to-token "$(cat "$AGENT2_DATA/token")" --mode live -p "$MOVED_PORT:8080"
AFTER=$(curl -fsS "http://127.0.0.1:$MOVED_PORT/healthz")
echo "after, on edge-2:  $AFTER"
[ "$AFTER" = "$BEFORE" ] || { echo "the app's counts did not move with it" >&2; exit 1; }
UKEDGE_HOST="http://127.0.0.1:$AGENT2_PORT" UKEDGE_HOST_TOKEN=$(cat "$AGENT2_DATA/token") \
  $UKEDGE ps
UKEDGE_HOST="unix://$AGENT2_DATA/agent.sock" $UKEDGE stop edge-sensor
UKEDGE_HOST="unix://$AGENT2_DATA/agent.sock" $UKEDGE rm edge-sensor
kill "$AGENT2_PID"; wait "$AGENT2_PID" 2>/dev/null || true
AGENT2_PID=

step "an on-demand instance: the agent listens, the first request boots the VM, idling stops it"
OD_PORT=$((PORT + 2))
$UKEDGE run --on-demand --idle-timeout 5s --name edge-ondemand -p "$OD_PORT:8080" demo/sensor-agg:1
$UKEDGE ps -a
curl -fsS -o /dev/null -w 'first request (boots the VM): %{time_total} s\n' "http://127.0.0.1:$OD_PORT/healthz"
curl -fsS -o /dev/null -w 'second request (warm): %{time_total} s\n' "http://127.0.0.1:$OD_PORT/healthz"
$UKEDGE ps
echo "waiting for the idle timeout…"
for _ in $(seq 1 100); do
  $UKEDGE ps -q | grep -q . || break
  sleep 0.2
done
$UKEDGE ps -a
$UKEDGE rm edge-ondemand
unset UKEDGE_HOST UKEDGE_HOST_TOKEN
kill "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null || true
AGENT_PID=

UP_CONTROLLER_PORT=${DEMO_CONTROLLER_PORT:-17700}
UP_HUB="127.0.0.1:${DEMO_UP_HUB_PORT:-15001}"
UP_AGENT_PORT=$((AGENT_PORT + 1))
step "a fleet of one: ukedge up runs a controller, a hub and a local agent in one process"
$UKEDGE up --data "$UP_DATA" --name edge-up --addr-controller "127.0.0.1:$UP_CONTROLLER_PORT" \
  --addr-hub "$UP_HUB" --addr-agent "127.0.0.1:$UP_AGENT_PORT" >"$UP_DATA.out" 2>"$UP_DATA.log" &
UP_PID=$!
for _ in $(seq 1 1200); do
  grep -q ready "$UP_DATA.out" 2>/dev/null && break
  kill -0 "$UP_PID" 2>/dev/null || { echo "ukedge up failed; its log:" >&2; cat "$UP_DATA.log" >&2; exit 1; }
  sleep 0.1
done
grep -q ready "$UP_DATA.out" || { echo "ukedge up did not get ready; its log:" >&2; cat "$UP_DATA.log" >&2; exit 1; }
cat "$UP_DATA.out"
# What `up` printed to export (the controller's admin token and certificate are in its data).
export UKEDGE_CONTROLLER="https://127.0.0.1:$UP_CONTROLLER_PORT"
UKEDGE_CONTROLLER_TOKEN=$(cat "$UP_DATA/controller/admin.token")
export UKEDGE_CONTROLLER_TOKEN
export UKEDGE_CONTROLLER_CERT="$UP_DATA/controller/tls.crt"
$UKEDGE node ls

step "push sensor-agg to the fleet's hub and deploy two replicas through the controller"
$UKEDGE tag sensor-agg:1 "$UP_HUB/demo/sensor-agg:1"
$UKEDGE push -q "$UP_HUB/demo/sensor-agg:1"
# Two replicas on one node cannot publish the same host port, so each replica is a deployment
# of its own with its own port (on a fleet of several nodes: one deployment, --replicas N).
FLEET_PORTS=("$((PORT + 3))" "$((PORT + 4))")
for i in 0 1; do
  $UKEDGE deploy "sensor-agg-$i" --image "$UP_HUB/demo/sensor-agg:1" -e WINDOW_SECONDS=2 \
    -p "${FLEET_PORTS[$i]}:8080" --wait
done
$UKEDGE deployments ls
$UKEDGE replicas

step "post readings to both replicas; their results stream back to the controller"
$UKEDGE results -f &
FOLLOW_PID=$!
for i in 0 1; do
  port=${FLEET_PORTS[$i]}
  for _ in $(seq 1 300); do curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fsS -X POST -H 'Content-Type: application/json' \
    -d "[{\"sensor\":\"t$i\",\"value\":2$i.5},{\"sensor\":\"t$i\",\"value\":2$i.0}]" \
    "http://127.0.0.1:$port/readings" >/dev/null
done
# A window closes after WINDOW_SECONDS; a later reading makes the app write it out at once.
sleep 3
for i in 0 1; do
  curl -fsS -X POST -d "{\"sensor\":\"t$i\",\"value\":1}" "http://127.0.0.1:${FLEET_PORTS[$i]}/readings" >/dev/null
done
arrived=
for _ in $(seq 1 600); do
  if $UKEDGE results --deployment sensor-agg-0 --json 2>/dev/null | grep -q . &&
    $UKEDGE results --deployment sensor-agg-1 --json 2>/dev/null | grep -q .; then
    arrived=yes
    break
  fi
  sleep 0.2
done
sleep 1  # let the follower print what arrived
kill "$FOLLOW_PID" 2>/dev/null; wait "$FOLLOW_PID" 2>/dev/null || true
FOLLOW_PID=
[ -n "$arrived" ] || { echo "the results of both replicas did not reach the controller" >&2; exit 1; }
echo "records at the controller: $($UKEDGE results --json | wc -l), from both replicas"

step "stop ukedge up: it stops the deployed instances, then the controller, hub and agent"
kill -TERM "$UP_PID"
wait "$UP_PID" 2>/dev/null || true
UP_PID=
tail -n 3 "$UP_DATA.log"
$UKEDGE rmi "$UP_HUB/demo/sensor-agg:1" >/dev/null
step "done"
