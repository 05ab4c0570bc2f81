#!/usr/bin/env bash
# Flower as a framework: configs/federated-flower.toml (3 MNIST silos, SecAgg+, client-side
# fixed clipping, central Gaussian noise) run by Flower 1.42's own machinery with PyTorch
# clients, in deployment mode on one machine: a real `flower-superlink --insecure` on
# 127.0.0.1, count_proxy.py in front of its Fleet API, 3 `flower-supernode --insecure`
# (partition-id 0..2 via --node-config) that reach the SuperLink through the proxy, and
# `flwr run` of flower_app/. Every process is started here, in a process group of its own,
# and stopped on exit (also on failure or Ctrl-C). Every wait is bounded.
#
#   bench/flower-engine/run_flower.sh            # 10 rounds (the measurement)
#   ROUNDS=2 bench/flower-engine/run_flower.sh   # smoke test
#
# Environment (defaults in brackets):
#   ROUNDS [10]; PY [/root/venv-flower-torch/bin/python]; DPTRAIN_SHARED [<repo>/../shared]
#   DATA [$DPTRAIN_SHARED/datasets/mnist]; RUN_DEADLINE [1800] seconds for the run
#   SERVER_OPTIMIZER [fedavg] or fedavgm (see README); PIN ["taskset -c 0,1"], "" for none
#   Variants, all off by default (stock Flower polling):
#   GRID_POLL_S [0]  ServerApp Grid.send_and_receive poll instead of Flower's 3 s
#   SUPERNODE_POLL_S []  SuperNode idle poll instead of its hard-coded 3 s (patched launcher)
#   SUPEREXEC_POLL_S []  FLWR_SUPEREXEC_TASK_POLL_INTERVAL (Flower's knob; default 1 s)
#   KEEP_TMP [0]  keep the FLWR_HOME/cache temp folder
# Output: one JSON line on stdout, appended to results/flower-engine.jsonl; logs in
# results/run-<stamp>/ (superlink, proxy, node<i>, serverapp, server.json, proxy.json).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
PY=${PY:-/root/venv-flower-torch/bin/python}
venv_bin=$(dirname "$PY")
ROUNDS=${ROUNDS:-10}
SHARED=$(realpath -m "${DPTRAIN_SHARED:-$repo/../shared}")
DATA=$(realpath -m "${DATA:-$SHARED/datasets/mnist}")
RUN_DEADLINE=${RUN_DEADLINE:-1800}
SERVER_OPTIMIZER=${SERVER_OPTIMIZER:-fedavg}
GRID_POLL_S=${GRID_POLL_S:-0}
PIN=${PIN-taskset -c 0,1}
export GRID_POLL_S SUPERNODE_POLL_S=${SUPERNODE_POLL_S:-} SUPEREXEC_POLL_S=${SUPEREXEC_POLL_S:-}
[ -x "$PY" ] || { echo "no python at $PY (see README: Setup)" >&2; exit 1; }
[ -f "$DATA/train-images-idx3-ubyte.gz" ] || { echo "no MNIST in $DATA" >&2; exit 1; }

stamp=$(date +%Y%m%d-%H%M%S)
logs=$here/results/run-$stamp
mkdir -p "$logs"
tmp=$(mktemp -d /tmp/flower-engine.XXXXXX)
export PATH=$venv_bin:$PATH FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
# One thread per process: 3 silos + SuperLink + ServerApp share 2 cores.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMEXPR_NUM_THREADS=1
[ -n "${SUPEREXEC_POLL_S:-}" ] && export FLWR_SUPEREXEC_TASK_POLL_INTERVAL=$SUPEREXEC_POLL_S
[ -n "${SUPERNODE_POLL_S:-}" ] && export FLOWER_BENCH_SUPERNODE_POLL_S=$SUPERNODE_POLL_S

read -r link_port proxy_port rt0 rt1 rt2 < <("$PY" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
EOF
)
rt_ports=("$rt0" "$rt1" "$rt2")

groups=()
stop() {
    local rc=$?
    for g in "${groups[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
    for _ in $(seq 20); do  # at most 5 s for a clean exit
        local alive=0
        for g in "${groups[@]}"; do kill -0 -- "-$g" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.25
    done
    for g in "${groups[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
    [ "${KEEP_TMP:-0}" = 1 ] || rm -rf "$tmp"
    exit $rc
}
trap stop EXIT
trap 'exit 130' INT TERM
start() {  # LOG COMMAND...: in a process group of its own
    local log=$1; shift
    setsid $PIN "$@" > "$logs/$log" 2>&1 &
    groups+=($!)
}
wait_for() {  # SECONDS DESCRIPTION COMMAND...: poll every 0.5 s, at most SECONDS
    local secs=$1 what=$2; shift 2
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || { echo "timed out after ${secs}s waiting for $what" >&2; return 1; }
        sleep 0.5
    done
}
http_ok() { "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$1"; }
port_open() { "$PY" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$1"; }

# Data: the silos' partitions decoded once into the cache (outside the timed rounds).
"$PY" - "$here/flower_app" "$DATA" "$SHARED/bench/opacus" "$tmp/cache" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
from flwr_engine_bench import task
rc = {"data": sys.argv[2], "opacus-dir": sys.argv[3], "cache-dir": sys.argv[4], "seed": 0}
task.add_paths(rc)
for p in range(task.NUM_SILOS):
    x, y = task.load_partition(rc, p)
print(f"cache: {task.NUM_SILOS} partitions of {len(y)}", file=sys.stderr)
EOF

mkdir -p "$tmp/link" "$tmp/cli" "$tmp/node0" "$tmp/node1" "$tmp/node2"
printf '[superlink]\ndefault = "local"\n[superlink.local]\naddress = "127.0.0.1:%s"\ninsecure = true\n' \
    "$link_port" > "$tmp/cli/config.toml"

start superlink.log env FLWR_HOME="$tmp/link" flower-superlink --insecure --host 127.0.0.1 \
    --port "$link_port" --disable-runtime-dependency-installation
wait_for 60 "the SuperLink" http_ok "http://127.0.0.1:$link_port/health"
start proxy.log "$PY" "$here/count_proxy.py" --listen "127.0.0.1:$proxy_port" \
    --target "127.0.0.1:$link_port" --stats "$logs/proxy.json" --max-seconds $((RUN_DEADLINE + 300))
wait_for 20 "the proxy" port_open "$proxy_port"
for i in 0 1 2; do
    start "node$i.log" env FLWR_HOME="$tmp/node$i" "$PY" "$here/supernode_launcher.py" --insecure \
        --superlink "127.0.0.1:$proxy_port" --port "${rt_ports[$i]}" \
        --node-config "partition-id=$i num-partitions=3"
done
echo "SuperLink 127.0.0.1:$link_port, proxy :$proxy_port, 3 SuperNodes; logs in $logs" >&2

runcfg="num-server-rounds=$ROUNDS server-optimizer=\"$SERVER_OPTIMIZER\" grid-poll-s=$GRID_POLL_S"
runcfg+=" data=\"$DATA\" opacus-dir=\"$SHARED/bench/opacus\" federated-dir=\"$repo/bench/federated\""
runcfg+=" cache-dir=\"$tmp/cache\" out=\"$logs/server.json\" proxy-stats=\"$logs/proxy.json\""
t_submit=$(date +%s.%N)
started=$(cd "$here/flower_app" && FLWR_HOME=$tmp/cli timeout 120 flwr run . local --format json \
    --run-config "$runcfg")
run=$("$PY" -c 'import json, sys; print(json.loads(sys.argv[1])["run-id"])' "$started")
echo "run $run submitted" >&2
status() { FLWR_HOME=$tmp/cli timeout 60 flwr ls local --run-id "$run" --format json 2>/dev/null || true; }
end=$((SECONDS + RUN_DEADLINE))
until status | grep -q '"status": "finished'; do
    ((SECONDS < end)) || { echo "run $run did not finish in ${RUN_DEADLINE}s" >&2; exit 1; }
    sleep 2
done
t_done=$(date +%s.%N)
status | grep '"status"' >&2 || true
FLWR_HOME=$tmp/cli timeout 60 flwr log "$run" local --show > "$logs/serverapp.log" 2>&1 || true
kill -TERM -- "-${groups[1]}" 2>/dev/null || true  # proxy: final counters
for _ in $(seq 20); do kill -0 -- "-${groups[1]}" 2>/dev/null || break; sleep 0.25; done
[ -s "$logs/server.json" ] || { echo "the ServerApp wrote no result; see $logs" >&2;
    tail -20 "$logs/serverapp.log" >&2; exit 1; }

"$PY" - "$logs" "$run" "$t_submit" "$t_done" "$ROUNDS" <<'EOF'
import importlib.metadata as md, json, os, platform, subprocess, sys, time
logs, run, t_submit, t_done, rounds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
res = json.load(open(os.path.join(logs, "server.json")))
proxy = json.load(open(os.path.join(logs, "proxy.json")))
def sh(c):
    return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
params = res.get("params", 407050)
out = {
    "bench": "flower_engine",
    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "cpu": sh("lscpu | sed -n 's/^Model name: *//p'"),
    "cores": os.cpu_count(),
    "affinity": sorted(os.sched_getaffinity(0)),
    "python": platform.python_version(),
    "flwr": md.version("flwr"), "torch": md.version("torch"), "numpy": md.version("numpy"),
    "dp_accounting": md.version("dp-accounting"),
    "transport": "Fleet API: protobuf over HTTP/1.1 (httpx, plain TCP, --insecure), "
                 "SuperNode -> count_proxy -> SuperLink on 127.0.0.1",
    "flower_run_id": run,
    **res,
    "theoretical_secaggplus_up_bytes_per_client_per_round": 8 * params,
    "wire_total_c2s_bytes": proxy["c2s"], "wire_total_s2c_bytes": proxy["s2c"],
    "wire_total_connections": proxy["connections"],
    "submit_to_finished_s": t_done - t_submit,
    "thread_isolation": "OMP/MKL_NUM_THREADS=1, torch.set_num_threads(1) in ClientApp and ServerApp",
    "variants": {k: os.environ.get(k) for k in ("GRID_POLL_S", "SUPERNODE_POLL_S", "SUPEREXEC_POLL_S") if os.environ.get(k, "0") not in ("", "0", "0.0")},
    "logs": logs,
}
if "wire_up_bytes_per_round_per_client" in res:
    out["wire_up_over_theoretical"] = res["wire_up_bytes_per_round_per_client"] / (8 * params)
line = json.dumps(out)
print(line)
with open(os.path.join(os.path.dirname(logs), "flower-engine.jsonl"), "a") as f:
    f.write(line + "\n")
EOF
