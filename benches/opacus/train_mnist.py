#!/usr/bin/env python3
"""DP-SGD training on MNIST with Opacus (CPU): accuracy vs epsilon.

  python train_mnist.py --model cnn --epsilon 3 --epochs 15 --lr 1.0 [--data DIR] [--out run.json]

What it does:
  * full MNIST train (60,000) / test (10,000), pixels/255 then (x-0.1307)/0.3081
  * DataLoader(TensorDataset, batch_size=B) handed to PrivacyEngine(accountant="rdp")
    .make_private_with_epsilon(...): Poisson sampling (sample_rate = 1/len(loader) =
    1/ceil(60000/B)), noise multiplier found by Opacus's RDP binary search for
    (target epsilon, delta) after `epochs` * len(loader) steps
  * SGD(lr, momentum), flat per-sample clipping at max_grad_norm, loss_reduction="mean"
    (the noisy sum is divided by the expected batch size 60000/len(loader))
  * after each epoch: test accuracy, epsilon so far (RDP)
  * at the end: epsilon by RDP (what Opacus reports), by PRV and by GDP on the same history
--epsilon 0 trains without privacy (plain SGD, shuffled batches of B) for reference.
--noise-multiplier S fixes sigma instead (epsilon then only reported, e.g. for short probes).
--holdout N trains on the first 60000-N (seeded shuffle) and evaluates on the last N
instead of the test set (use this for any tuning).
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mnist_common as mc  # noqa: E402


@torch.no_grad()
def evaluate(model, x, y, bs=2000):
    model.eval()
    correct, loss_sum = 0, 0.0
    for i in range(0, len(y), bs):
        out = model(x[i : i + bs])
        loss_sum += float(nn.functional.cross_entropy(out, y[i : i + bs], reduction="sum"))
        correct += int((out.argmax(1) == y[i : i + bs]).sum())
    model.train()
    return correct / len(y), loss_sum / len(y)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join("..", "shared", "datasets", "mnist"))
    ap.add_argument("--model", default="cnn", choices=list(mc.MODELS))
    ap.add_argument("--epsilon", type=float, default=3.0, help="target epsilon; 0 = non-private")
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=256, help="expected (Poisson) batch size")
    ap.add_argument("--lr", type=float, default=1.0)
    ap.add_argument("--momentum", type=float, default=0.0)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--mode", default="hooks", help="opacus grad_sample_mode")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--holdout", type=int, default=0)
    ap.add_argument("--noise-multiplier", type=float, default=None,
                    help="use this sigma (make_private) instead of solving for --epsilon")
    ap.add_argument("--out", default=None, help="write the result JSON here")
    # dptrain additions (issue 13): Fashion-MNIST's constants, Opacus's PRV accountant
    # (close to dptrain's PLD default) and a per-step cosine learning rate like dptrain's
    # `lr_schedule = { kind = "cosine", end = 0 }`.
    ap.add_argument("--fashion", action="store_true", help="Fashion-MNIST normalisation (0.2860, 0.3530)")
    ap.add_argument("--accountant", default="rdp", choices=["rdp", "prv"])
    ap.add_argument("--cosine", action="store_true", help="lr · (1 + cos(π t/T))/2 per step")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_start = time.perf_counter()
    flat = mc.FLAT_INPUT[args.model]
    norm = dict(mean=mc.FASHION_MEAN, std=mc.FASHION_STD) if args.fashion else {}
    if args.holdout:
        x, y = mc.load_split(args.data, "train", flat, perm_seed=args.seed, **norm)
        xt, yt = x[-args.holdout :], y[-args.holdout :]
        x, y = x[: -args.holdout], y[: -args.holdout]
    else:
        x, y = mc.load_split(args.data, "train", flat, **norm)
        xt, yt = mc.load_split(args.data, "test", flat, **norm)

    model = mc.MODELS[args.model]()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    criterion = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(args.seed)
    train_loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y),
        batch_size=args.batch_size,
        shuffle=args.epsilon == 0,
        generator=gen,
    )

    import opacus
    from opacus import PrivacyEngine
    from opacus.accountants import GaussianAccountant, PRVAccountant

    engine = None
    sigma = 0.0
    if args.epsilon > 0:
        engine = PrivacyEngine(accountant=args.accountant)
        common = dict(
            module=model,
            optimizer=optimizer,
            criterion=criterion,
            data_loader=train_loader,
            max_grad_norm=args.max_grad_norm,
            grad_sample_mode=args.mode,
        )
        if args.noise_multiplier is not None:
            out = engine.make_private(noise_multiplier=args.noise_multiplier, **common)
        else:
            out = engine.make_private_with_epsilon(
                target_epsilon=args.epsilon,
                target_delta=args.delta,
                epochs=args.epochs,
                **common,
            )
        if args.mode == "ghost":
            model, optimizer, criterion, train_loader = out
        else:
            model, optimizer, train_loader = out
        sigma = optimizer.noise_multiplier
    steps_per_epoch = len(train_loader)
    sample_rate = 1 / steps_per_epoch
    print(
        f"model={args.model} eps_target={args.epsilon} delta={args.delta} sigma={sigma:.4f} "
        f"q={sample_rate:.6f} steps/epoch={steps_per_epoch} lr={args.lr} mom={args.momentum} "
        f"C={args.max_grad_norm} mode={args.mode} torch={torch.__version__} opacus={opacus.__version__}",
        flush=True,
    )

    total_steps = steps_per_epoch * args.epochs
    step = 0
    history = []
    t_train0 = time.perf_counter()
    train_time = 0.0
    for epoch in range(1, args.epochs + 1):
        te = time.perf_counter()
        cpu0 = mc.cpu_seconds()
        n_seen, loss_sum, n_batches = 0, 0.0, 0
        for xb, yb in train_loader:
            if args.cosine:
                import math
                for group in optimizer.param_groups:
                    group["lr"] = args.lr * (1 + math.cos(math.pi * step / total_steps)) / 2
            step += 1
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(xb), yb)
            loss.backward()
            optimizer.step()
            n_seen += len(yb)
            n_batches += 1
            if len(yb):
                loss_sum += float(loss.detach()) * len(yb)
        epoch_s = time.perf_counter() - te
        cpu_util = (mc.cpu_seconds() - cpu0) / epoch_s
        train_time += epoch_s
        acc, tloss = evaluate(model, xt, yt)
        # PRV's ε takes about a minute to compute: only after the last epoch.
        slow = args.accountant == "prv" and epoch < args.epochs
        eps = engine.get_epsilon(args.delta) if engine and not slow else float("nan")
        rec = {
            "epoch": epoch,
            "train_loss": loss_sum / max(n_seen, 1),
            "eval_acc": acc,
            "eval_loss": tloss,
            "eps_rdp": eps,
            "epoch_seconds": epoch_s,
            "cpu_util": cpu_util,
            "samples": n_seen,
            "batches": n_batches,
        }
        history.append(rec)
        print(
            f"epoch {epoch:2d} train_loss {rec['train_loss']:.4f} eval_acc {acc:.4f} "
            f"eval_loss {tloss:.4f} eps_rdp {eps:.3f} ({epoch_s:.1f}s, cpu {cpu_util:.2f}, {n_seen} samples)",
            flush=True,
        )

    result = {
        "model": args.model,
        "target_epsilon": args.epsilon,
        "delta": args.delta,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "sample_rate": sample_rate,
        "steps": steps_per_epoch * args.epochs,
        "noise_multiplier": sigma,
        "lr": args.lr,
        "momentum": args.momentum,
        "max_grad_norm": args.max_grad_norm,
        "mode": args.mode,
        "seed": args.seed,
        "holdout": args.holdout,
        "final_eval_acc": history[-1]["eval_acc"],
        "train_seconds": train_time,
        "wall_seconds": time.perf_counter() - t_start,
        "torch": torch.__version__,
        "opacus": opacus.__version__,
        "threads": torch.get_num_threads(),
        "peak_rss_mib": mc.peak_rss_mib(),
        "history": history,
    }
    if engine:
        hist = list(engine.accountant.history)
        result["eps_rdp"] = engine.get_epsilon(args.delta)
        prv = PRVAccountant()
        prv.history = hist
        result["eps_prv"] = prv.get_epsilon(args.delta)
        gdp = GaussianAccountant()
        gdp.history = hist
        try:
            result["eps_gdp"] = gdp.get_epsilon(args.delta)
        except Exception as e:  # GDP is only an approximation; report if it fails
            result["eps_gdp"] = f"error: {e}"
        result["accountant_history"] = hist
    print(json.dumps({k: v for k, v in result.items() if k != "history"}), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
