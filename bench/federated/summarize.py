"""Summarise run_bench.sh's JSON lines: median [min, max] rounds/s per configuration,
over the runs with no build process seen (flagged runs are counted separately).

    python summarize.py results/runs-*.jsonl
"""
import json
import statistics
import sys


def config(d):
    if d["bench"] == "torch_round":
        return f"torch_round threads={d['threads']}"
    return (f"flower_round actors={d['actors']} client_threads={d['client_threads']} "
            f"ray_cpus={d['ray_cpus']}")


def fmt(v):
    return f"{statistics.median(v):.3f} [{min(v):.3f}, {max(v):.3f}]"


def main(paths):
    rows = {}
    for p in paths:
        with open(p) as f:
            for line in f:
                if line.strip():
                    d = json.loads(line)
                    rows.setdefault(config(d), []).append(d)
    print(f"{'configuration':<52} {'clean':>5} {'flagged':>7}  rounds/s median [min, max]"
          f"   with eval              acc (median)")
    med = {}
    for k, ds in rows.items():
        clean = [d for d in ds if not d.get("builder_seen")]
        use = clean or ds
        r = [d["rounds_per_s"] for d in use]
        e = [d["rounds_per_s_with_eval"] for d in use]
        a = statistics.median(d["test_acc_after_timed"] for d in use)
        med[k] = statistics.median(r)
        print(f"{k:<52} {len(clean):>5} {len(ds) - len(clean):>7}  {fmt(r):<26} {fmt(e):<24} {a:.4f}")
    t = [v for k, v in med.items() if k.startswith("torch_round threads=2")]
    if t:
        for k, v in med.items():
            if k.startswith("flower"):
                print(f"torch_round (2 threads) / {k}: {t[0] / v:.1f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
