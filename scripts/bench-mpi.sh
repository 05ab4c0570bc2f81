#!/usr/bin/env bash
# Speed of one DP-SGD run spread over MPI ranks on this machine (issue 16): the cnn
# (configs/mnist-cnn-eps3.toml, EPOCHS epochs) with `--dist mpi` on 1 rank with one thread,
# 1 rank with all cores, and 2 ranks; REPEATS times each, interleaved. Checks that every
# run ends with the same model bit for bit, prints the medians and ratios (whole mpirun
# jobs, and the training loop alone from rank 0's timing.csv), and writes them to
# OUT/mpi-bench.json.
#
#   scripts/bench-mpi.sh [EPOCHS] [REPEATS] [OUT]
#
# Needs a build with the mpi feature (`cargo build --release --features mpi`) and mpirun.
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-2}
repeats=${2:-3}
out=${3:-reports/examples/mpi-bench}
mkdir -p "$out"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
run() { # name ranks threads(or "") repeat
    local dir="$scratch/$1-$4"
    local env=()
    [[ -n $3 ]] && env=(-x "RAYON_NUM_THREADS=$3")
    local start end
    start=$(date +%s.%N)
    if [[ -n $3 ]]; then export RAYON_NUM_THREADS=$3; else unset RAYON_NUM_THREADS; fi
    mpirun -np "$2" --oversubscribe --bind-to none "${env[@]}" target/release/dptrain -q train \
        configs/mnist-cnn-eps3.toml --dist mpi --out "$dir" \
        --set "training.epochs=$epochs" >/dev/null
    end=$(date +%s.%N)
    unset RAYON_NUM_THREADS
    awk -v n="$1" -v s="$start" -v e="$end" 'BEGIN { print n, e - s }' >>"$scratch/times"
    # The training loop alone (rank 0's timing.csv: steps and evaluations, no start-up).
    echo "$1-training-loop $(tail -1 "$dir/timing.csv" | cut -d, -f3)" >>"$scratch/times"
}
for r in $(seq "$repeats"); do
    run one-rank-one-thread 1 1 "$r"
    run one-rank-all-cores 1 "" "$r"
    run two-ranks 2 "" "$r"
done
first=$(ls -d "$scratch"/*/ | head -1)
for dir in "$scratch"/*/; do
    cmp -s "$first/model.safetensors" "$dir/model.safetensors" || {
        echo "models differ: $first $dir" >&2
        exit 1
    }
done
python3 - "$scratch/times" "$out" "$epochs" "$repeats" <<'PY'
import json, statistics, sys, platform
times, out, epochs, repeats = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
runs = {}
for line in open(times):
    name, seconds = line.split()
    runs.setdefault(name, []).append(float(seconds))
median = {k: statistics.median(v) for k, v in runs.items()}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
result = {
    "config": "configs/mnist-cnn-eps3.toml", "epochs": epochs, "repeats": repeats,
    "cpu": cpu, "cores": __import__("os").cpu_count(),
    "seconds": runs, "median_seconds": median,
    "two_ranks_vs_one_rank_one_thread": median["one-rank-one-thread"] / median["two-ranks"],
    "two_ranks_vs_one_rank_all_cores": median["one-rank-all-cores"] / median["two-ranks"],
    "training_loop_two_ranks_vs_one_rank_one_thread":
        median["one-rank-one-thread-training-loop"] / median["two-ranks-training-loop"],
    "training_loop_two_ranks_vs_one_rank_all_cores":
        median["one-rank-all-cores-training-loop"] / median["two-ranks-training-loop"],
    "models_equal_bit_for_bit": True,
}
json.dump(result, open(f"{out}/mpi-bench.json", "w"), indent=2)
print(json.dumps(result, indent=2))
PY
