#!/usr/bin/env bash
# Training-step throughput of dptrain and Opacus side by side, in one invocation, model by
# model (batch 256, 2 threads, fixed batches, sigma = 1, C = 1).
#
#   OPACUS_PYTHON=~/venv-opacus/bin/python scripts/bench-opacus.sh [REPEATS] [all|mnist|shapes]
#
# The second argument picks the MNIST models (logreg, mlp, cnn), issue 13's shapes, or both.
#
# The Opacus side is benches/opacus (copied from ../shared/bench/opacus and extended with
# issue 13's models: cifar_gn, resnet20_gn, embedbag on synthetic data, the PyTorch twins of
# configs/bench/*.toml). Needs a Python with
# torch 2.15.0 and opacus 1.6.0 (python3 -m venv ~/venv-opacus &&
# ~/venv-opacus/bin/pip install torch==2.15.0 opacus==1.6.0 numpy; about 5.5 GB, keep it
# outside the repo). Run it on an otherwise idle machine. Peak RSS of dptrain is measured
# with /usr/bin/time when it is installed (GNU time).
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-1}
set_name=${2:-all}
case "$set_name" in all|mnist|shapes) ;; *) echo "second argument: all, mnist or shapes" >&2; exit 2;; esac
mnist_models="logreg mlp cnn"; shapes="cifar10-convnet-gn:cifar_gn resnet20-gn:resnet20_gn embedding-bag:embedbag transformer:transformer"
[ "$set_name" = shapes ] && mnist_models=""
[ "$set_name" = mnist ] && shapes=""
python=${OPACUS_PYTHON:-python3}
opacus=benches/opacus
out=reports/bench-opacus
mkdir -p "$out"
: > "$out/opacus.jsonl"
: > "$out/dptrain.jsonl"
cargo build --release --quiet
for model in $mnist_models; do
  (cd "$opacus" && "$python" bench_throughput.py matrix --models "$model" \
      --modes nonprivate,hooks,ghost,ew --repeats "$repeats" \
      --data "$OLDPWD/datasets/mnist" --out "$OLDPWD/$out/opacus.jsonl") > /dev/null
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f '{"model": "'"$model"'", "peak_rss_kib": %M}' -o "$out/rss-$model.json" \
      target/release/dptrain bench --model "$model" --repeats "$repeats" --json >> "$out/dptrain.jsonl"
  else
    target/release/dptrain bench --model "$model" --repeats "$repeats" --json >> "$out/dptrain.jsonl"
  fi
done
# Issue 13's shapes: each dptrain config beside its PyTorch twin (synthetic data; fewer
# timed steps, the ResNet steps take seconds).
for pair in $shapes; do
  config=${pair%%:*}; model=${pair##*:}
  (cd "$opacus" && "$python" bench_throughput.py matrix --models "$model" \
      --modes nonprivate,hooks,ghost --repeats "$repeats" --steps 5 --min-seconds 5 \
      --out "$OLDPWD/$out/opacus.jsonl") > /dev/null
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f '{"model": "'"$config"'", "peak_rss_kib": %M}' -o "$out/rss-$config.json" \
      target/release/dptrain bench --config "configs/bench/$config.toml" --steps 5 \
      --repeats "$repeats" --json >> "$out/dptrain.jsonl"
  else
    target/release/dptrain bench --config "configs/bench/$config.toml" --steps 5 \
      --repeats "$repeats" --json >> "$out/dptrain.jsonl"
  fi
done
(cd "$opacus" && "$python" bench_throughput.py summarize --out "$OLDPWD/$out/opacus.jsonl")
cat "$out/dptrain.jsonl"
cat "$out"/rss-*.json 2>/dev/null || true
