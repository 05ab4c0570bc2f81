"""The federated MNIST round of configs/federated-mnist.toml as a plain PyTorch loop in one
process, no Flower: the cost of the equivalent local training plus the server step.

Per round: Poisson-sample clients (q = 120/3383); for each, load the global model, one local
epoch of SGD (lr 0.05, batch 10), clip delta to 0.5; sum, add N(0, (1.2*0.5)^2), divide by
120, FedAvgM (lr 1.0, momentum 0.9) on the pseudo-gradient -avg; then test accuracy.

Prints one JSON line (also appended to --out): rounds/s without and with the test
evaluation, over --rounds timed rounds after --warmup rounds.
"""
import argparse
import json
import statistics
import time

import numpy as np

import fedround_common as fc
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=fc.DEFAULT_DATA)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    header = fc.machine_header()
    x, y, xt, yt, parts = fc.load_data(args.data, args.seed)

    torch.manual_seed(args.seed)
    global_model = fc.mnist_common.MLP()  # PyTorch default init
    work = fc.mnist_common.MLP()
    global_vec = torch.nn.utils.parameters_to_vector(global_model.parameters()).detach().clone()
    dim = global_vec.numel()
    momentum = None
    rng = np.random.default_rng(args.seed)
    noise_gen = torch.Generator().manual_seed(args.seed + 1)
    sigma = fc.NOISE_MULTIPLIER * fc.CLIP

    train_s, eval_s, sampled, accs = [], [], [], []
    busy0 = cpu0 = None
    for r in range(args.warmup + args.rounds):
        if r == args.warmup:
            busy0, cpu0, wall0 = fc.proc_stat_busy(), time.process_time(), time.perf_counter()
        t0 = time.perf_counter()
        chosen = fc.poisson_sample(rng)
        total = torch.zeros(dim)
        for c in chosen:
            idx = parts[c]
            total += fc.client_update(work, global_vec, x[idx], y[idx],
                                      fc.client_generator(args.seed, r, int(c)))
        # Server: noise on the sum, divide by the expected count, FedAvgM.
        total += torch.normal(0.0, sigma, (dim,), generator=noise_gen)
        pseudo_grad = -(total / fc.EXPECTED_CLIENTS)
        momentum = pseudo_grad if momentum is None else fc.SERVER_MOMENTUM * momentum + pseudo_grad
        global_vec -= fc.SERVER_LR * momentum
        t1 = time.perf_counter()
        fc.load_vector(global_model, global_vec)
        acc = fc.test_accuracy(global_model, xt, yt)
        t2 = time.perf_counter()
        if r >= args.warmup:
            train_s.append(t1 - t0)
            eval_s.append(t2 - t1)
            sampled.append(len(chosen))
            accs.append(acc)
    wall = time.perf_counter() - wall0
    busy = fc.busy_fraction(busy0, fc.proc_stat_busy())
    cpu = time.process_time() - cpu0

    res = {
        "bench": "torch_round",
        **header,
        "threads": args.threads,
        "rounds_timed": args.rounds,
        "warmup_rounds": args.warmup,
        "rounds_per_s": args.rounds / sum(train_s),
        "rounds_per_s_with_eval": args.rounds / (sum(train_s) + sum(eval_s)),
        "median_round_s": statistics.median(train_s),
        "median_eval_s": statistics.median(eval_s),
        "clients_per_round_mean": statistics.mean(sampled),
        "test_acc_after_timed": accs[-1],
        "test_acc_per_round": accs,
        "process_cpu_util": cpu / wall,
        "system_busy_fraction": busy,
    }
    line = json.dumps(res)
    print(line, flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
