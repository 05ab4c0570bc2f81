"""Pieces shared by torch_round.py and flower_round.py: the federated MNIST round of
dptrain's configs/federated-mnist.toml (client-level DP-FedAvg with server momentum).

The IDX reader and the model come from the Opacus baseline's mnist_common.py
(shared/bench/opacus/), imported, not copied.
"""
import os
import platform
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# /work/main/bench/federated -> /work/shared (the checkout's sibling shared/ folder)
SHARED = os.environ.get("DPTRAIN_SHARED", os.path.join(HERE, "..", "..", "..", "shared"))
OPACUS_DIR = os.path.join(SHARED, "bench", "opacus")
DEFAULT_DATA = os.path.join(SHARED, "datasets", "mnist")
if OPACUS_DIR not in sys.path:
    sys.path.insert(0, OPACUS_DIR)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import mnist_common  # noqa: E402  (IDX reader, normalisation, MLP)

# The round (configs/federated-mnist.toml).
NUM_CLIENTS = 3383
CLASSES_PER_CLIENT = 2
EXPECTED_CLIENTS = 120
Q = EXPECTED_CLIENTS / NUM_CLIENTS
LOCAL_EPOCHS = 1
LOCAL_BATCH = 10
LOCAL_LR = 0.05
CLIP = 0.5
NOISE_MULTIPLIER = 1.2
SERVER_LR = 1.0
SERVER_MOMENTUM = 0.9


def partition_by_label(labels, clients=NUM_CLIENTS, k=CLASSES_PER_CLIENT, seed=0):
    """dptrain's by_label scheme (src/federated/partition.rs), with numpy's RNG:
    shuffle, stable sort by label, cut into clients*k near-equal contiguous shards,
    deal k random shards to each client. Returns a list of int64 index arrays."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]
    shards = np.array_split(order, clients * k)
    deal = rng.permutation(clients * k)
    return [np.concatenate([shards[s] for s in deal[c * k:(c + 1) * k]]).astype(np.int64)
            for c in range(clients)]


_DATA = {}


def load_data(data_dir=DEFAULT_DATA, seed=0):
    """Train/test tensors and the partition; cached per process (each Ray actor loads once)."""
    key = (os.path.abspath(data_dir), seed)
    if key not in _DATA:
        x, y = mnist_common.load_split(data_dir, "train", flat=True)
        xt, yt = mnist_common.load_split(data_dir, "test", flat=True)
        parts = partition_by_label(y.numpy(), seed=seed)
        _DATA[key] = (x, y, xt, yt, [torch.from_numpy(p) for p in parts])
    return _DATA[key]


def poisson_sample(rng, n=NUM_CLIENTS, q=Q):
    """Each client independently with probability q."""
    return np.flatnonzero(rng.random(n) < q)


def local_train(model, x, y, gen):
    """One local epoch of plain SGD (lr 0.05, minibatch 10, shuffled, CE mean), in place.
    The last minibatch may be short (17 examples -> 10 + 7)."""
    opt = torch.optim.SGD(model.parameters(), lr=LOCAL_LR)
    n = len(y)
    for _ in range(LOCAL_EPOCHS):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, LOCAL_BATCH):
            idx = perm[i:i + LOCAL_BATCH]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()


@torch.no_grad()
def load_vector(model, vec):
    """Copy a flat vector into the parameters (copies: vector_to_parameters would make
    the parameters views of vec, and training would then write into it)."""
    off = 0
    for p in model.parameters():
        n = p.numel()
        p.copy_(vec[off:off + n].view_as(p))
        off += n


def client_update(model, global_vec, x, y, gen):
    """Start from the global model, train, return the clipped update as a flat vector:
    delta = local - global, scaled by min(1, C / (||delta|| + 1e-6))."""
    load_vector(model, global_vec)
    local_train(model, x, y, gen)
    with torch.no_grad():
        delta = torch.nn.utils.parameters_to_vector(model.parameters()) - global_vec
        factor = min(1.0, CLIP / (float(delta.norm()) + 1e-6))
        delta.mul_(factor)
    return delta


def client_generator(seed, rnd, client):
    return torch.Generator().manual_seed((seed * 1_000_003 + rnd) * 10_007 + client)


@torch.no_grad()
def test_accuracy(model, xt, yt, batch=2000):
    correct = 0
    for i in range(0, len(yt), batch):
        correct += int((model(xt[i:i + batch]).argmax(1) == yt[i:i + batch]).sum())
    return correct / len(yt)


def machine_header():
    """Date, CPU model, load average, pinning: for the raw result files."""
    try:
        cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True,
                             text=True).stdout.strip()
    except Exception:  # noqa: BLE001
        cpu = platform.processor()
    with open("/proc/loadavg") as f:
        load = f.read().strip()
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu": cpu,
        "loadavg_at_start": load,
        "affinity": sorted(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


def proc_stat_busy():
    """(busy, total) jiffies summed over all CPUs, from /proc/stat: system-wide, so it
    also sees Ray's worker processes and anything else competing for the cores."""
    with open("/proc/stat") as f:
        v = [int(t) for t in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle + iowait
    return sum(v) - idle, sum(v)


def busy_fraction(start, end):
    """Fraction of all-CPU time that was busy between two proc_stat_busy() readings
    (1.0 = both cores busy the whole time)."""
    db, dt = end[0] - start[0], end[1] - start[1]
    return db / dt if dt else float("nan")
