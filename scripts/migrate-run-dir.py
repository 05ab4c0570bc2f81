#!/usr/bin/env python3
"""Brings a run directory written before models became layer graphs (commit 54379ea,
2026-12-02) to today's format, so that `dptrain report`, `dptrain evaluate` and
`dptrain predict` read it. Nothing else of the run changes (its records, ε and plots stay).

    scripts/migrate-run-dir.py RUN_DIR [RUN_DIR ...]

- config.toml, [model]: `extra_layers = []` is dropped (it built nothing; a non-empty list
  is refused), and so is `activation` for logreg and mlp (the old logreg had none and the
  old mlp was always ReLU, today's mlp); the cnn keeps its activation (today's cnn preset
  is the same net).
- model.safetensors: tensors named `layers.<i>.<weight|bias>` become `<i>.<kind>.<...>`,
  today's names (the kind from the weight's rank: 4 dimensions a conv2d, 2 a linear). The
  index is the layer's position, the same in both formats for the three presets.
- config.toml, [privacy]: a run made while RDP was the default accountant names none;
  the accountant its summary.json states is written in (else today's default, PLD, would
  redraw its ε curve under another accountant).
- config.toml, [training]: the old string schedules become today's tables
  (`lr_schedule = "cosine"` is `{ kind = "cosine", end = 0.0 }`; "constant" the default).
Files are rewritten through a temporary file and a rename; a directory already in
today's format is left as it is. Standard library only.
"""
import json
import os
import re
import struct
import sys


def write_atomic(path, data):
    tmp = path + ".migrating"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def migrate_config(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    out, section, kind, changed = [], None, None, False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        if section == "[model]":
            m = re.match(r'kind\s*=\s*"(\w+)"', stripped)
            if m:
                kind = m.group(1)
    section = None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        if section == "[model]":
            if re.match(r"extra_layers\s*=", stripped):
                if not re.match(r"extra_layers\s*=\s*\[\s*\]$", stripped):
                    sys.exit(f"{path}: {stripped}: only an empty extra_layers can be migrated")
                changed = True
                continue
            if kind in ("logreg", "mlp") and re.match(r"activation\s*=", stripped):
                changed = True
                continue
        if section == "[training]":
            m = re.match(r'lr_schedule\s*=\s*"(\w+)"$', stripped)
            if m:
                # The old string schedules: "constant" (today's default) and "cosine",
                # lr0 (1 + cos(pi t/T))/2, today's cosine shape ending at 0.
                changed = True
                if m.group(1) == "cosine":
                    out.append('lr_schedule = { kind = "cosine", end = 0.0 }')
                elif m.group(1) != "constant":
                    sys.exit(f"{path}: {stripped}: an unknown old schedule")
                continue
        out.append(line)
    if changed:
        write_atomic(path, "\n".join(out).encode("utf-8"))
    return changed


def pin_accountant(run):
    """A run made when RDP was the default accountant (before PLD became it) names none in
    its config; today's default would redraw its ε curve under PLD. Pin the accountant its
    summary.json states."""
    config = os.path.join(run, "config.toml")
    summary = os.path.join(run, "summary.json")
    if not os.path.isfile(summary):
        return False
    accountant = json.load(open(summary, encoding="utf-8")).get("accountant")
    lines = open(config, encoding="utf-8").read().split("\n")
    if accountant in (None, "pld") or "[privacy]" not in [l.strip() for l in lines]:
        return False
    section = None
    for line in lines:
        if line.strip().startswith("["):
            section = line.strip()
        elif section == "[privacy]" and re.match(r"accountant\s*=", line.strip()):
            return False
    at = [l.strip() for l in lines].index("[privacy]")
    lines.insert(at + 1, f'accountant = "{accountant}"')
    write_atomic(config, "\n".join(lines).encode("utf-8"))
    return True


def migrate_model(path):
    raw = open(path, "rb").read()
    if len(raw) < 8:
        sys.exit(f"{path}: not a safetensors file")
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    names = [k for k in header if k != "__metadata__"]
    legacy = re.compile(r"layers\.(\d+)\.(weight|bias)$")
    if not names or not all(legacy.match(k) for k in names):
        if any(legacy.match(k) for k in names):
            sys.exit(f"{path}: a mix of old and new tensor names")
        return False
    kinds = {}
    for k in names:
        index, part = legacy.match(k).groups()
        if part == "weight":
            rank = len(header[k]["shape"])
            kinds[index] = {4: "conv2d", 2: "linear"}.get(rank) or sys.exit(
                f"{path}: {k} has rank {rank}: neither a conv2d nor a linear weight"
            )
    renamed = {}
    for k, v in header.items():
        if k == "__metadata__":
            renamed[k] = v
            continue
        index, part = legacy.match(k).groups()
        if index not in kinds:
            sys.exit(f"{path}: {k} has no weight beside it")
        renamed[f"{index}.{kinds[index]}.{part}"] = v
    text = json.dumps(renamed, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    write_atomic(path, struct.pack("<Q", len(text)) + text + data)
    return True


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for run in sys.argv[1:]:
        config = os.path.join(run, "config.toml")
        if not os.path.isfile(config):
            sys.exit(f"{run}: no config.toml")
        done = []
        if migrate_config(config):
            done.append("config.toml")
        if pin_accountant(run):
            done.append("config.toml (accountant pinned)")
        model = os.path.join(run, "model.safetensors")
        if os.path.isfile(model) and migrate_model(model):
            done.append("model.safetensors")
        print(f"{run}: {', '.join(done) if done else 'already in today format'}")


if __name__ == "__main__":
    main()
