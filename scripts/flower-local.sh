#!/usr/bin/env bash
# A federation on one machine, end to end: a Flower SuperLink on 127.0.0.1, one
# `dptrain fl node` per client of the config's partition, and the dptrain ServerApp
# (flower/), which starts `dptrain fl server-step` and writes the run directory. Every
# process is started here and stopped at the end (also on Ctrl-C).
#
#   scripts/flower-local.sh [CONFIG] [OUT]
#
# Defaults: configs/federated-flower.toml (3 silos on MNIST, SecAgg+), reports/<its name>.
# Logs: OUT.logs/ (the SuperLink's, each node's, the ServerApp's).
set -euo pipefail
cd "$(dirname "$0")/.."
config=$(realpath "${1:-configs/federated-flower.toml}")
venv=$(scripts/flower-venv.sh)
py=$venv/bin/python
name=$("$py" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["name"])' "$config")
out=$(realpath -m "${2:-reports/$name}")
silos=$("$py" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["federated"]["partition"]["clients"])' "$config")
cargo build --release --quiet
dptrain=$(realpath target/release/dptrain)
port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
logs=$out.logs
mkdir -p "$logs"
export PATH=$venv/bin:$PATH FLWR_HOME=$logs/flwr-home FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
mkdir -p "$FLWR_HOME"
printf '[superlink]\ndefault = "local"\n[superlink.local]\naddress = "127.0.0.1:%s"\ninsecure = true\n' "$port" > "$FLWR_HOME/config.toml"
groups=()
stop() {
    for g in "${groups[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
    sleep 2
    for g in "${groups[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
}
trap stop EXIT
start() { # LOG COMMAND...: in a process group of its own
    local log=$1; shift
    setsid "$@" > "$logs/$log" 2>&1 &
    groups+=($!)
}
start superlink.log flower-superlink --insecure --host 127.0.0.1 --port "$port" --disable-runtime-dependency-installation
for _ in $(seq 120); do
    "$py" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "http://127.0.0.1:$port/health" 2>/dev/null && break
    sleep 0.5
done
echo "SuperLink on 127.0.0.1:$port; $silos silos; logs in $logs" >&2
for ((client = 0; client < silos; client++)); do
    start "node$client.log" "$dptrain" fl node --superlink "http://127.0.0.1:$port" --config "$config" --client "$client" --once
done
started=$(cd flower && flwr run . local --format json --run-config "dptrain=\"$dptrain\" config=\"$config\" out=\"$out\"")
run=$("$py" -c 'import json, sys; print(json.loads(sys.argv[1])["run-id"])' "$started")
echo "run $run started" >&2
deadline=$((SECONDS + ${DPTRAIN_FLOWER_DEADLINE:-86400}))
while ! flwr ls local --run-id "$run" --format json | grep -q '"status": "finished'; do
    ((SECONDS < deadline)) || { echo "run $run did not finish in time" >&2; exit 1; }
    sleep 2
done
flwr ls local --run-id "$run" --format json | grep '"status"' >&2
flwr log "$run" local --show > "$logs/serverapp.log" 2>&1 || true
grep -v '^\s*$' "$logs/serverapp.log" | tail -8
test -f "$out/summary.json"
