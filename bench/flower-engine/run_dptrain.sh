#!/usr/bin/env bash
# dptrain on Flower: configs/federated-flower.toml (3 MNIST silos, SecAgg+, central
# Gaussian noise) with a real `flower-superlink --insecure` on 127.0.0.1, count_proxy.py in
# front of its Fleet API, 3 `dptrain fl node` (Rust) that reach it through the proxy, and
# the dptrain ServerApp (flower/) with `dptrain fl server-step` behind it. The twin of
# run_flower.sh (Flower's own machinery, PyTorch clients): same SuperLink, same proxy,
# same transport (protobuf over HTTP/1.1). Every process is started here, in a process
# group of its own, and stopped on exit; every wait is bounded.
#
#   bench/flower-engine/run_dptrain.sh             # 10 rounds (the measurement)
#   ROUNDS=2 bench/flower-engine/run_dptrain.sh    # smoke test
#
# Environment: ROUNDS [the config's 10]; RUN_DEADLINE [1800] s; PIN ["taskset -c 0,1"].
# Needs target/release/dptrain (cargo build --release) and the flwr venv
# (scripts/flower-venv.sh). Output: one JSON line on stdout, appended to
# results/dptrain-engine.jsonl; logs and the run directory in results/dptrain-run-<stamp>/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=$("$repo/scripts/flower-venv.sh" 2>/dev/null)
py=$venv/bin/python
dptrain=$repo/target/release/dptrain
config=$repo/configs/federated-flower.toml
RUN_DEADLINE=${RUN_DEADLINE:-1800}
PIN=${PIN-taskset -c 0,1}
[ -x "$dptrain" ] || { echo "build dptrain first: cargo build --release" >&2; exit 1; }
stamp=$(date +%Y%m%d-%H%M%S)
logs=$here/results/dptrain-run-$stamp
out=$logs/run
mkdir -p "$logs"
tmp=$(mktemp -d /tmp/dptrain-engine.XXXXXX)
export PATH=$venv/bin:$PATH FLWR_HOME=$tmp FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
read -r link_port proxy_port < <("$py" -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
printf '[superlink]\ndefault = "local"\n[superlink.local]\naddress = "127.0.0.1:%s"\ninsecure = true\n' \
    "$link_port" > "$tmp/config.toml"
groups=()
stop() {
    local rc=$?
    for g in "${groups[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
    for _ in $(seq 20); do
        local alive=0
        for g in "${groups[@]}"; do kill -0 -- "-$g" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.25
    done
    for g in "${groups[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
    rm -rf "$tmp"
    exit $rc
}
trap stop EXIT
trap 'exit 130' INT TERM
start() {  # LOG COMMAND...: in a process group of its own
    local log=$1; shift
    setsid $PIN "$@" > "$logs/$log" 2>&1 &
    groups+=($!)
}
wait_for() {  # SECONDS DESCRIPTION COMMAND...
    local secs=$1 what=$2; shift 2
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || { echo "timed out after ${secs}s waiting for $what" >&2; return 1; }
        sleep 0.5
    done
}
http_ok() { "$py" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$1"; }
port_open() { "$py" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$1"; }

start superlink.log flower-superlink --insecure --host 127.0.0.1 --port "$link_port" \
    --disable-runtime-dependency-installation
wait_for 60 "the SuperLink" http_ok "http://127.0.0.1:$link_port/health"
start proxy.log "$py" "$here/count_proxy.py" --listen "127.0.0.1:$proxy_port" \
    --target "127.0.0.1:$link_port" --stats "$logs/proxy.json" --max-seconds $((RUN_DEADLINE + 300))
wait_for 20 "the proxy" port_open "$proxy_port"
set_rounds=""
[ -n "${ROUNDS:-}" ] && set_rounds="federated.client_level.rounds=$ROUNDS"
node_set=()
[ -n "$set_rounds" ] && node_set=(--set "$set_rounds")
for i in 0 1 2; do
    start "node$i.log" "$dptrain" fl node --superlink "http://127.0.0.1:$proxy_port" \
        --config "$config" "${node_set[@]}" --client "$i" --once
done
echo "SuperLink 127.0.0.1:$link_port, proxy :$proxy_port, 3 dptrain nodes; logs in $logs" >&2
t_submit=$(date +%s.%N)
started=$(cd "$repo/flower" && timeout 120 flwr run . local --format json --run-config \
    "dptrain=\"$dptrain\" config=\"$config\" out=\"$out\" set=\"$set_rounds\"")
run=$("$py" -c 'import json, sys; print(json.loads(sys.argv[1])["run-id"])' "$started")
echo "run $run submitted" >&2
status() { timeout 60 flwr ls local --run-id "$run" --format json 2>/dev/null || true; }
end=$((SECONDS + RUN_DEADLINE))
until status | grep -q '"status": "finished'; do
    ((SECONDS < end)) || { echo "run $run did not finish in ${RUN_DEADLINE}s" >&2; exit 1; }
    sleep 1
done
t_done=$(date +%s.%N)
timeout 60 flwr log "$run" local --show > "$logs/serverapp.log" 2>&1 || true
kill -TERM -- "-${groups[1]}" 2>/dev/null || true  # the proxy writes its final counters
for _ in $(seq 20); do kill -0 -- "-${groups[1]}" 2>/dev/null || break; sleep 0.25; done
[ -s "$out/summary.json" ] || { echo "no run directory in $out; see $logs" >&2; exit 1; }

"$py" - "$logs" "$out" "$run" "$t_submit" "$t_done" "$dptrain" <<'PYEOF'
import csv, json, os, subprocess, sys, time
logs, out, run, t_submit, t_done, dptrain = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
summary = json.load(open(os.path.join(out, "summary.json")))
rows = list(csv.DictReader(open(os.path.join(out, "metrics.csv"))))
proxy = json.load(open(os.path.join(logs, "proxy.json")))
rounds = len(rows)
seconds = [float(r["seconds"]) for r in rows]
clients = 3
sh = lambda c: subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
result = {
    "bench": "dptrain_engine",
    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "cpu": sh("lscpu | sed -n 's/^Model name: *//p'"),
    "cores": os.cpu_count(),
    "dptrain": sh(f"{dptrain} --version"),
    "transport": "Fleet API: protobuf over HTTP/1.1 (ureq, plain TCP), dptrain fl node -> count_proxy -> SuperLink on 127.0.0.1",
    "flower_run_id": run,
    "rounds_completed": rounds,
    "round_s": seconds,
    "rounds_wall_s": sum(seconds),
    "rounds_per_min": 60 * rounds / sum(seconds),
    "survivors": [int(r["survivors"]) for r in rows],
    "test_acc_per_round": [float(r["test_accuracy"]) for r in rows],
    "test_acc_final": float(rows[-1]["test_accuracy"]),
    "epsilon_dptrain": float(rows[-1]["epsilon"]),
    "summary": summary,
    "wire_total_c2s_bytes": proxy["c2s"],
    "wire_total_s2c_bytes": proxy["s2c"],
    "wire_total_connections": proxy["connections"],
    "wire_up_bytes_per_round_per_client_incl_startup": proxy["c2s"] / rounds / clients,
    "wire_down_bytes_per_round_per_client_incl_startup": proxy["s2c"] / rounds / clients,
    "submit_to_finished_s": t_done - t_submit,
    "logs": logs,
}
line = json.dumps(result)
print(line)
with open(os.path.join(os.path.dirname(logs), "dptrain-engine.jsonl"), "a") as f:
    f.write(line + "\n")
PYEOF
# The records stay; the 1.6 MB model and the checkpoint are not kept with the results.
rm -rf "$out/checkpoint" "$out/model.safetensors"
