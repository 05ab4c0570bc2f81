"""The federated MNIST round of configs/federated-mnist.toml in Flower's simulation engine
(flwr 1.42: run_simulation with a ClientApp and a ServerApp, Ray backend, 3,383 virtual
SuperNodes, one per client).

Server: Flower's message-API strategy FedAvgM (serverapp.strategy.FedAvgM, its own
momentum/server-lr code) with two overrides so that the arithmetic is dptrain's:
  * configure_train: Poisson sampling (each node with q = 120/3383) instead of FedAvg's
    fixed-size uniform sample;
  * the averaging under FedAvgM (FedAvg.aggregate_train) is replaced by: sum of the
    clients' clipped updates + N(0, (z*C)^2) per coordinate, divided by the expected
    count 120 (Flower's compute_stdv/add_gaussian_noise_inplace helpers, applied as
    DifferentialPrivacy*FixedClipping does, but before the momentum step rather than
    after it, and unweighted).
Client (ClientApp @train): load the global ArrayRecord, one local epoch of SGD, clip
delta = local - global to L2 0.5 with factor min(1, C/(||delta||+1e-6)) (the client-side
clipping placement of DifferentialPrivacyClientSideFixedClipping/fixedclipping_mod) and
send the clipped delta back. Local training is the same function torch_round.py uses.
Centralised test accuracy: the strategy's evaluate_fn, timed separately.

Prints one JSON line (also appended to --out).
"""
import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# Ray workers import fedround_common (and through it mnist_common) by name.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [HERE] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import fedround_common as fc  # noqa: E402
from flwr.app import (Array, ArrayRecord, ConfigRecord, Context, Message, MessageType,  # noqa: E402
                      MetricRecord, RecordDict)
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg, FedAvgM  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402
from flwr.supercore.differential_privacy import add_gaussian_noise_inplace, compute_stdv  # noqa: E402

ARGS = None
RESULT = {}

# ----------------------------------------------------------------------------- client


def _client_threads():
    return int(os.environ.get("FEDBENCH_CLIENT_THREADS", "2"))


_WORK = {}


def _work_model():
    if "m" not in _WORK:
        torch.set_num_threads(_client_threads())
        _WORK["m"] = fc.mnist_common.MLP()
    return _WORK["m"]


client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    t0 = time.perf_counter()
    cfg = msg.content["config"]
    x, y, _, _, parts = fc.load_data(cfg["data"], int(cfg["seed"]))
    cid = int(context.node_config["partition-id"])
    idx = parts[cid]
    model = _work_model()
    state = msg.content["arrays"].to_torch_state_dict()
    global_vec = torch.nn.utils.parameters_to_vector(
        [state[k] for k, _ in model.named_parameters()]).clone()
    delta = fc.client_update(model, global_vec, x[idx], y[idx],
                             fc.client_generator(int(cfg["seed"]), int(cfg["server-round"]), cid))
    # Back to named tensors (same keys/shapes as the state dict).
    out, off = {}, 0
    for k, p in model.named_parameters():
        out[k] = delta[off:off + p.numel()].view_as(p).clone()
        off += p.numel()
    arrays = ArrayRecord(out)
    # client_s: time inside this function (unpack, train, clip, pack), to separate the
    # local work from Flower's messaging/scheduling overhead.
    content = RecordDict({"arrays": arrays, "metrics": MetricRecord(
        {"num-examples": len(idx), "client_s": time.perf_counter() - t0})})
    return Message(content=content, reply_to=msg)


# ----------------------------------------------------------------------------- server


class NoisyExpectedMean(FedAvg):
    """Replaces FedAvg's weighted mean of models: returns global + (sum of clipped
    deltas + Gaussian noise) / expected clients, which FedAvgM then turns into its
    pseudo-gradient (old - new) and the momentum step."""

    def aggregate_train(self, server_round, replies):
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        keys = list(self.round_arrays.keys())
        total = [np.zeros_like(a) for a in self.round_arrays.to_numpy_ndarrays()]
        for m in valid:
            for t, d in zip(total, m.content["arrays"].to_numpy_ndarrays(), strict=True):
                t += d
        # Noise N(0, (z*C)^2) on the sum == N(0, (z*C/E)^2) on sum/E (Flower's helper).
        avg = [t / fc.EXPECTED_CLIENTS for t in total]
        add_gaussian_noise_inplace(
            avg, compute_stdv(fc.NOISE_MULTIPLIER, fc.CLIP, fc.EXPECTED_CLIENTS))
        new = [g + a for g, a in zip(self.round_arrays.to_numpy_ndarrays(), avg, strict=True)]
        client_s = sum(float(m.content["metrics"]["client_s"]) for m in valid)
        self.client_s[server_round] = client_s
        metrics = MetricRecord({"clients": len(valid), "client_s": client_s})
        return ArrayRecord({k: Array(np.asarray(v)) for k, v in zip(keys, new, strict=True)}), metrics


class DPFedAvgMPoisson(FedAvgM, NoisyExpectedMean):
    """MRO: FedAvgM.aggregate_train -> NoisyExpectedMean.aggregate_train -> momentum."""

    def __init__(self, seed, **kw):
        super().__init__(fraction_evaluate=0.0, min_available_nodes=fc.NUM_CLIENTS,
                         server_learning_rate=fc.SERVER_LR,
                         server_momentum=fc.SERVER_MOMENTUM, **kw)
        self.rng = np.random.default_rng(seed)
        self.t_start, self.t_end, self.sampled, self.client_s = {}, {}, {}, {}

    def configure_train(self, server_round, arrays, config, grid):
        self.t_start[server_round] = time.perf_counter()
        if self.current_arrays is None:  # as FedAvgM.configure_train
            self.current_arrays = arrays
        self.round_arrays = arrays
        node_ids = sorted(grid.get_node_ids())
        chosen = [node_ids[i] for i in fc.poisson_sample(self.rng, n=len(node_ids))]
        self.sampled[server_round] = len(chosen)
        config["server-round"] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(record, chosen, MessageType.TRAIN)

    def aggregate_train(self, server_round, replies):
        out = super().aggregate_train(server_round, replies)
        self.t_end[server_round] = time.perf_counter()
        return out


server_app = ServerApp()


@server_app.main()
def server_main(grid: Grid, context: Context) -> None:
    args = ARGS
    torch.set_num_threads(args.server_threads)
    _, _, xt, yt, _ = fc.load_data(args.data, args.seed)
    torch.manual_seed(args.seed)
    model = fc.mnist_common.MLP()  # PyTorch default init
    eval_model = fc.mnist_common.MLP()
    strategy = DPFedAvgMPoisson(seed=args.seed)
    eval_s, accs = {}, {}

    def evaluate_fn(server_round, arrays):
        t0 = time.perf_counter()
        eval_model.load_state_dict(arrays.to_torch_state_dict())
        acc = fc.test_accuracy(eval_model, xt, yt)
        eval_s[server_round] = time.perf_counter() - t0
        accs[server_round] = acc
        return MetricRecord({"accuracy": acc})

    n = args.warmup + args.rounds
    timed = list(range(args.warmup + 1, n + 1))
    state = {}

    orig_configure = strategy.configure_train

    def configure_train(server_round, arrays, config, grid):
        if server_round == args.warmup + 1:
            state["busy0"] = fc.proc_stat_busy()
            state["wall0"] = time.perf_counter()
        return orig_configure(server_round, arrays, config, grid)

    strategy.configure_train = configure_train
    config = ConfigRecord({"data": os.path.abspath(args.data), "seed": args.seed})
    strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
                   num_rounds=n, train_config=config, evaluate_fn=evaluate_fn)
    wall_end = time.perf_counter()
    busy = fc.busy_fraction(state["busy0"], fc.proc_stat_busy())
    # Whole loop from the first timed round's configure_train to the end, including the
    # per-round (empty) client-evaluate exchange and Flower's bookkeeping, minus the
    # centralised evaluation time.
    wall = wall_end - state["wall0"]
    ev = sum(eval_s[r] for r in timed)
    per_round = [strategy.t_end[r] - strategy.t_start[r] for r in timed]
    RESULT.update({
        "rounds_per_s": args.rounds / (wall - ev),
        "rounds_per_s_with_eval": args.rounds / wall,
        "rounds_per_s_train_only": args.rounds / sum(per_round),
        "median_round_s": statistics.median(per_round),
        "median_eval_s": statistics.median(eval_s[r] for r in timed),
        "client_fn_s_per_round_median": statistics.median(strategy.client_s[r] for r in timed),
        "clients_per_round_mean": statistics.mean(strategy.sampled[r] for r in timed),
        "test_acc_after_timed": accs[n],
        "test_acc_per_round": [accs[r] for r in timed],
        "system_busy_fraction": busy,
    })


# ----------------------------------------------------------------------------- main


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=fc.DEFAULT_DATA)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cpus", type=float, default=2, help="Ray's CPU count (init_args)")
    ap.add_argument("--actors", type=int, default=2,
                    help="concurrent ClientApp actors; each gets cpus/actors CPUs and "
                         "that many torch threads (at least 1)")
    ap.add_argument("--server-threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--verbose", action="store_true")
    ARGS = ap.parse_args()

    per_actor = ARGS.cpus / ARGS.actors
    os.environ["FEDBENCH_CLIENT_THREADS"] = str(max(1, int(per_actor)))
    header = fc.machine_header()
    import importlib.metadata
    import ray
    backend_config = {
        "init_args": {"num_cpus": ARGS.cpus, "num_gpus": 0, "include_dashboard": False},
        "client_resources": {"num_cpus": per_actor, "num_gpus": 0.0},
    }
    t0 = time.perf_counter()
    run_simulation(server_app=server_app, client_app=client_app,
                   num_supernodes=fc.NUM_CLIENTS, backend_config=backend_config,
                   verbose_logging=ARGS.verbose)
    total = time.perf_counter() - t0
    if not RESULT:
        print(json.dumps({"bench": "flower_round", "error": "ServerApp produced no result"}))
        sys.exit(1)
    res = {
        "bench": "flower_round",
        **header,
        "flwr": importlib.metadata.version("flwr"),
        "ray": ray.__version__,
        "ray_cpus": ARGS.cpus,
        "actors": ARGS.actors,
        "client_threads": int(os.environ["FEDBENCH_CLIENT_THREADS"]),
        "server_threads": ARGS.server_threads,
        "rounds_timed": ARGS.rounds,
        "warmup_rounds": ARGS.warmup,
        **RESULT,
        "run_simulation_total_s": total,
    }
    line = json.dumps(res)
    print(line, flush=True)
    if ARGS.out:
        with open(ARGS.out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
