"""Data, model and local training of configs/federated-flower.toml, for the Flower app.

MNIST train set (60,000; x/255 then (x-0.1307)/0.3081, flattened) split IID into 3
silos of 20,000 (numpy default_rng(seed).permutation, then np.array_split: the same
sizes as dptrain's iid partition, not the same examples). Model mlp
(Linear(784,512)-ReLU-Linear(512,10), PyTorch default init), from
shared/bench/opacus/mnist_common.py (imported, not copied). Local: 1 epoch of plain SGD,
lr 0.05, minibatch 50, shuffled, CE mean.

torch is imported lazily (inside the functions): in deployment mode the SuperNode starts
a fresh `flwr-clientapp` process for every message, and three of SecAgg+'s four stages
never reach the client function, so they need not pay for importing torch.
"""
from __future__ import annotations

import os
import sys

import numpy as np

NUM_SILOS = 3


def add_paths(run_config) -> None:
    """Make shared/bench/opacus (mnist_common) and bench/federated (fedround_common)
    importable. Both come as absolute paths in the run config (set by run_flower.sh)."""
    for key in ("opacus-dir", "federated-dir"):
        d = str(run_config.get(key, ""))
        if d and d not in sys.path:
            sys.path.insert(0, d)


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, int(n)))


def partition_indices(n: int, seed: int, silos: int = NUM_SILOS) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [p.astype(np.int64) for p in np.array_split(order, silos)]


def load_partition(run_config, partition_id: int):
    """(x, y) torch tensors of one silo. Cached as .npy in cache-dir (if set) so that the
    per-message ClientApp processes after the first do not decode the IDX files again."""
    import torch

    seed = int(run_config["seed"])
    cache = str(run_config.get("cache-dir", ""))
    if cache:
        fx = os.path.join(cache, f"mnist-iid{NUM_SILOS}-s{seed}-p{partition_id}-x.npy")
        fy = os.path.join(cache, f"mnist-iid{NUM_SILOS}-s{seed}-p{partition_id}-y.npy")
        if os.path.exists(fx) and os.path.exists(fy):
            return torch.from_numpy(np.load(fx)), torch.from_numpy(np.load(fy))
    import mnist_common

    x, y = mnist_common.load_split(str(run_config["data"]), "train", flat=True)
    idx = torch.from_numpy(partition_indices(len(y), seed)[partition_id])
    x, y = x[idx].contiguous(), y[idx].contiguous()
    if cache:
        os.makedirs(cache, exist_ok=True)
        for path, arr in ((fx, x.numpy()), (fy, y.numpy())):
            tmp = f"{path}.tmp{os.getpid()}"
            with open(tmp, "wb") as f:
                np.save(f, arr)
            os.replace(tmp, path)
    return x, y


def new_model(seed: int | None = None):
    import torch

    import mnist_common

    if seed is not None:
        torch.manual_seed(seed)
    return mnist_common.MLP()


def get_ndarrays(model) -> list[np.ndarray]:
    return [v.detach().cpu().numpy().copy() for v in model.state_dict().values()]


def set_ndarrays(model, arrays) -> None:
    import torch

    keys = list(model.state_dict().keys())
    model.load_state_dict({k: torch.from_numpy(np.asarray(a).copy())
                           for k, a in zip(keys, arrays, strict=True)})


def local_train(model, x, y, *, epochs: int, batch: int, lr: float, gen) -> None:
    import torch
    import torch.nn.functional as F

    opt = torch.optim.SGD(model.parameters(), lr=lr)
    n = len(y)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()


def generator(seed: int, rnd: int, silo: int):
    import torch

    return torch.Generator().manual_seed((seed * 1_000_003 + rnd) * 10_007 + silo)


def param_count() -> int:
    return 784 * 512 + 512 + 512 * 10 + 10  # 407,050
