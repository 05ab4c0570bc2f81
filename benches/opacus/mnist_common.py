"""Shared pieces for the Opacus MNIST baseline: IDX loading and the three models.

The model definitions here are the reference the Rust reimplementation must match.
PyTorch default initialisation is used everywhere (nn.Linear / nn.Conv2d: weight and
bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in_features or in_ch*kh*kw).
"""
import gzip
import os
import struct

import numpy as np
import torch
import torch.nn as nn

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
DEFAULT_DATA = os.path.join("..", "shared", "datasets", "mnist")


def read_idx(path):
    """Read a gzip-compressed IDX file (big-endian header) into a uint8 numpy array."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, count = struct.unpack(">II", raw[:8])
    if magic == 0x00000803:
        rows, cols = struct.unpack(">II", raw[8:16])
        arr = np.frombuffer(raw, dtype=np.uint8, offset=16).copy()
        return arr.reshape(count, rows, cols)
    if magic == 0x00000801:
        return np.frombuffer(raw, dtype=np.uint8, offset=8).copy().reshape(count)
    raise ValueError(f"{path}: unexpected IDX magic {magic:#010x}")


FASHION_MEAN = 0.2860
FASHION_STD = 0.3530


def load_split(data_dir, split, flat, perm_seed=None, mean=MNIST_MEAN, std=MNIST_STD):
    """Return (x, y) torch tensors.

    x: float32, pixels/255 then (x - 0.1307) / 0.3081; shape [N, 784] if flat else [N, 1, 28, 28].
    y: int64 labels.
    perm_seed: if given, the examples are shuffled once (on the uint8 data, before conversion).
    """
    prefix = "train" if split == "train" else "t10k"
    imgs = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    if perm_seed is not None:
        perm = np.random.default_rng(perm_seed).permutation(len(labels))
        imgs, labels = imgs[perm], labels[perm]
    x = torch.from_numpy(np.ascontiguousarray(imgs)).to(torch.float32)
    x.div_(255.0).sub_(mean).div_(std)
    x = x.reshape(len(labels), 784) if flat else x.reshape(len(labels), 1, 28, 28)
    y = torch.from_numpy(labels.astype(np.int64))
    return x.contiguous(), y


class LogReg(nn.Module):
    """logreg: Linear(784, 10). Input [B, 784]."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x)


class MLP(nn.Module):
    """mlp: Linear(784, 512) -> ReLU -> Linear(512, 10). Input [B, 784]."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 512)
        self.fc2 = nn.Linear(512, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class SampleConvNet(nn.Module):
    """cnn: the Opacus MNIST example network. Input [B, 1, 28, 28].

    Conv2d(1,16,k=8,stride=2,padding=3) -> tanh -> MaxPool2d(k=2,stride=1)   # 28 -> 14 -> 13
    Conv2d(16,32,k=4,stride=2,padding=0) -> tanh -> MaxPool2d(k=2,stride=1)  # 13 -> 5 -> 4
    flatten (C,H,W order, 32*4*4 = 512) -> Linear(512,32) -> tanh -> Linear(32,10)
    Parameters: 1040 + 8224 + 16416 + 330 = 26010.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 8, 2, padding=3)
        self.conv2 = nn.Conv2d(16, 32, 4, 2)
        self.fc1 = nn.Linear(32 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.tanh(self.conv1(x))
        x = torch.max_pool2d(x, 2, 1)
        x = torch.tanh(self.conv2(x))
        x = torch.max_pool2d(x, 2, 1)
        x = x.flatten(1)
        x = torch.tanh(self.fc1(x))
        return self.fc2(x)


MODELS = {"logreg": LogReg, "mlp": MLP, "cnn": SampleConvNet}
FLAT_INPUT = {"logreg": True, "mlp": True, "cnn": False}


def peak_rss_mib():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def current_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def cpu_seconds():
    """user+system CPU seconds of this process (all threads)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
