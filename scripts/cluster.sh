#!/usr/bin/env bash
# A local two-node Ray cluster, as a user starts one before `ray job submit`:
#   scripts/cluster.sh up     head node (GCS, dashboard, job server) + one worker node
#   scripts/cluster.sh down   stop both nodes (only these: other Ray processes stay)
#   scripts/cluster.sh status `ray status` of this cluster
# Each node is its own `ray start --block` process (its pid in $RUN_DIR), with
# FEEDRANK_RAY_NODE_CPUS CPUs (default 1) and FEEDRANK_RAY_OBJECT_STORE_MB of
# object store (default 300). Ports: GCS FEEDRANK_RAY_PORT (6390: Redis has
# 6379), dashboard and job API FEEDRANK_RAY_DASHBOARD_PORT (8265), Ray client
# FEEDRANK_RAY_CLIENT_PORT (10001), the nodes' dashboard agents
# FEEDRANK_RAY_AGENT_PORT and the port after it (52375, 52376). Then, for example:
#   ray job submit --address http://127.0.0.1:8265 -- feedrank pipeline foundation --profile cluster
# (docs/scale-out.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RAY="$ROOT/.venv/bin/ray"
PORT="${FEEDRANK_RAY_PORT:-6390}"
DASHBOARD_PORT="${FEEDRANK_RAY_DASHBOARD_PORT:-8265}"
CLIENT_PORT="${FEEDRANK_RAY_CLIENT_PORT:-10001}"
# Each node's dashboard agent (which runs submitted jobs) needs a port of its own:
# Ray's default, 52365, is taken by any other Ray on the machine, and by the first node.
AGENT_PORT="${FEEDRANK_RAY_AGENT_PORT:-52375}"
CPUS="${FEEDRANK_RAY_NODE_CPUS:-1}"
STORE_BYTES="$(( ${FEEDRANK_RAY_OBJECT_STORE_MB:-300} * 1024 * 1024 ))"
RUN_DIR="${FEEDRANK_RAY_RUN_DIR:-$ROOT/data/ray-cluster}"
COMMON=(--num-cpus "$CPUS" --object-store-memory "$STORE_BYTES" --disable-usage-stats --block)

start_node() {  # name, ray start arguments...
  local name="$1"
  shift
  # Its own process group (setsid), so `down` stops the node's whole tree and nothing else.
  setsid "$RAY" start "$@" "${COMMON[@]}" >"$RUN_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/$name.pid"
}

wait_for_nodes() {  # count
  for _ in $(seq 1 120); do
    local alive
    alive="$("$ROOT/.venv/bin/python" - "$PORT" <<'PY' 2>/dev/null || true
import sys

import ray

ray.init(address=f"127.0.0.1:{sys.argv[1]}", logging_level="ERROR", log_to_driver=False)
print(sum(1 for node in ray.nodes() if node["Alive"]))
PY
)"
    if [[ "$alive" == "$1" ]]; then
      return 0
    fi
    sleep 1
  done
  echo "cluster: fewer than $1 nodes came up; logs in $RUN_DIR" >&2
  return 1
}

stop_nodes() {
  for name in worker head; do
    local pidfile="$RUN_DIR/$name.pid"
    [[ -f "$pidfile" ]] || continue
    local pid
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM -- "-$pid" 2>/dev/null || true
      for _ in $(seq 1 20); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
      done
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
  # `ray.init()` with no address would look for this cluster again.
  local current="${TMPDIR:-/tmp}/ray/ray_current_cluster"
  if [[ "$(cat "$current" 2>/dev/null)" == *":$PORT" ]]; then
    rm -f "$current"
  fi
}

case "${1:-}" in
  up)
    mkdir -p "$RUN_DIR"
    if [[ -f "$RUN_DIR/head.pid" ]] && kill -0 "$(cat "$RUN_DIR/head.pid")" 2>/dev/null; then
      echo "cluster: already up (head pid $(cat "$RUN_DIR/head.pid"))" >&2
      exit 1
    fi
    start_node head --head --node-ip-address 127.0.0.1 --port "$PORT" \
      --dashboard-host 127.0.0.1 --dashboard-port "$DASHBOARD_PORT" \
      --ray-client-server-port "$CLIENT_PORT" --include-dashboard true \
      --dashboard-agent-listen-port "$AGENT_PORT"
    wait_for_nodes 1 || { stop_nodes; exit 1; }
    start_node worker --address "127.0.0.1:$PORT" --node-ip-address 127.0.0.1 \
      --dashboard-agent-listen-port "$((AGENT_PORT + 1))"
    wait_for_nodes 2 || { stop_nodes; exit 1; }
    echo "cluster: 2 nodes up; jobs: ray job submit --address http://127.0.0.1:$DASHBOARD_PORT"
    ;;
  down)
    stop_nodes
    echo "cluster: down"
    ;;
  status)
    exec "$RAY" status --address "127.0.0.1:$PORT"
    ;;
  *)
    echo "usage: scripts/cluster.sh up|down|status" >&2
    exit 2
    ;;
esac
