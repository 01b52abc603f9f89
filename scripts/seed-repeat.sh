#!/usr/bin/env bash
# Runs the seed's task exactly as examples/http_server/task.yaml writes it
# (resources.ports: 8081, replicas: 2) on `baton dev` with the seed's four
# agents, N times (up, wait, down), and counts the rounds that did not come
# up as replicas 1 and 2 READY.
#
#   scripts/seed-repeat.sh [BATON_BINARY] [N]     # defaults: bin/baton 20
#
# Run from the repository root. It picks free ports for the API, Raft and
# NATS, and puts the LB on 127.0.0.32. TestSeedTaskOnDev (e2e) asserts the
# same under `make test`.
set -euo pipefail
bin=${1:-bin/baton}
n=${2:-20}
[ -x "$bin" ] || { echo "no baton binary at $bin (make build)" >&2; exit 2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
api=127.0.0.1:$(free_port)
log=$(mktemp)
"$bin" dev --agent cpus=2 --agent cpus=2 --agent cpus=4 --agent cpus=4,accelerators=A100:1 \
  --http-addr "$api" --raft-addr "127.0.0.1:$(free_port)" --nats-port "$(free_port)" \
  --lb-host 127.0.0.32 --lb-admin-addr 127.0.0.32:0 >"$log" 2>&1 &
dev=$!
trap 'kill $dev 2>/dev/null; wait $dev 2>/dev/null; rm -f "$log"' EXIT
export BATON_ADDR=http://$api
for _ in $(seq 1 100); do curl -sf "$BATON_ADDR/healthz" >/dev/null && break; sleep 0.1; done
replicas() {
  "$bin" serve status http-server --json | python3 -c '
import json, sys
print(" ".join("%d:%s" % (r["id"], r["status"]) for r in json.load(sys.stdin)["replicas"]))'
}
bad=0
for i in $(seq 1 "$n"); do
  "$bin" serve up examples/http_server/task.yaml -n http-server -y >/dev/null
  got=""
  for _ in $(seq 1 120); do
    got=$(replicas)
    [ "$got" = "1:READY 2:READY" ] && break
    if echo "$got" | grep -qE '(^| )([3-9]|[1-9][0-9]+):|FAILED'; then break; fi
    sleep 0.25
  done
  if [ "$got" = "1:READY 2:READY" ]; then
    echo "round $i: replicas 1,2 READY"
  else
    bad=$((bad + 1))
    echo "round $i: not the seed's replicas: $got"
  fi
  "$bin" serve down http-server -y --wait >/dev/null
done
echo "$bad of $n rounds did not come up as replicas 1,2 READY"
[ "$bad" -eq 0 ]
