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


class CifarConvNetGN(nn.Module):
    """cifar_gn: Opacus examples/cifar10.py's convnet with a GroupNorm(8) after each conv
    (dptrain: configs/bench/cifar10-convnet-gn.toml). Input [B, 3, 32, 32]."""

    def __init__(self):
        super().__init__()
        layers, c = [], 3
        for i, out in enumerate([32, 64, 64, 128]):
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.GroupNorm(8, out), nn.ReLU()]
            if i < 3:
                layers.append(nn.AvgPool2d(2, 2))
            c = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class BasicBlockGN(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.gn1 = nn.GroupNorm(8, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.gn2 = nn.GroupNorm(8, c_out)
        self.shortcut = (
            nn.Conv2d(c_in, c_out, 1, stride, bias=False) if stride != 1 or c_in != c_out else None
        )

    def forward(self, x):
        y = self.gn2(self.conv2(torch.relu(self.gn1(self.conv1(x)))))
        return torch.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet20GN(nn.Module):
    """resnet20_gn: ResNet-20 with GroupNorm(8) and 1x1 projection shortcuts
    (dptrain: configs/bench/resnet20-gn.toml). Input [B, 3, 32, 32]."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.gn = nn.GroupNorm(8, 16)
        blocks, c = [], 16
        for out, stride in [(16, 1), (32, 2), (64, 2)]:
            for k in range(3):
                blocks.append(BasicBlockGN(c, out, stride if k == 0 else 1))
                c = out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        x = self.blocks(torch.relu(self.gn(self.stem(x))))
        return self.head(x.mean(dim=(2, 3)))


class EmbedBag(nn.Module):
    """embedbag: Opacus examples/imdb.py SampleNet: Embedding(28996, 16), mean over T,
    Linear 16 -> 16, ReLU, Linear 16 -> 2 (dptrain: configs/bench/embedding-bag.toml).
    Input [B, 256] int64 ids."""

    def __init__(self, vocab=28996):
        super().__init__()
        self.emb = nn.Embedding(vocab, 16)
        self.fc1 = nn.Linear(16, 16)
        self.fc2 = nn.Linear(16, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(self.emb(x).mean(dim=1))))


class Encoder(nn.Module):
    """transformer: 2-layer pre-LN encoder, d 64, 4 heads (Opacus's DPMultiheadAttention),
    FFN 256, T 128, V 10,000, masked mean pool, Linear(64, 2)
    (dptrain: configs/bench/transformer.toml). Input [B, 128] int64 ids, 0 pads."""

    def __init__(self, vocab=10000, d=64, t=128, layers=2):
        super().__init__()
        from opacus.layers import DPMultiheadAttention

        self.emb = nn.Embedding(vocab, d, padding_idx=0)
        self.pos = nn.Parameter(torch.randn(t, d) * 0.02)
        self.blocks = nn.ModuleList()
        for _ in range(layers):
            self.blocks.append(nn.ModuleDict({
                "ln1": nn.LayerNorm(d), "attn": DPMultiheadAttention(d, 4, batch_first=True),
                "ln2": nn.LayerNorm(d), "fc1": nn.Linear(d, 256), "fc2": nn.Linear(256, d),
            }))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, 2)

    def forward(self, x):
        pad = x == 0
        h = self.emb(x) + self.pos
        for b in self.blocks:
            a = b["ln1"](h)
            h = h + b["attn"](a, a, a, key_padding_mask=pad, need_weights=False)[0]
            h = h + b["fc2"](torch.nn.functional.gelu(b["fc1"](b["ln2"](h))))
        h = self.ln(h)
        keep = (~pad).unsqueeze(-1).float()
        return self.head((h * keep).sum(1) / keep.sum(1).clamp(min=1))


def synthetic(model, n, seed=0):
    """Seeded random inputs of a benchmark model's shape (speed does not depend on values)."""
    g = torch.Generator().manual_seed(seed)
    if model == "transformer":
        lengths = torch.randint(64, 129, (n, 1), generator=g)
        ids = torch.randint(1, 10000, (n, 128), generator=g)
        ids = ids * (torch.arange(128).unsqueeze(0) < lengths)
        return ids, torch.randint(0, 2, (n,), generator=g)
    if model == "embedbag":
        return torch.randint(0, 28996, (n, 256), generator=g), torch.randint(0, 2, (n,), generator=g)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


SYNTHETIC = {
    "cifar_gn": CifarConvNetGN,
    "resnet20_gn": ResNet20GN,
    "embedbag": EmbedBag,
    "transformer": Encoder,
}


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
