"""ServerApp: configs/federated-flower.toml with Flower 1.42's own machinery.

The API combination that works in flwr 1.42 (see ../README.md for why):
  ServerApp @main  ->  LegacyContext(ServerConfig(num_rounds), strategy)
  DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))
  strategy = flwr.server.strategy.DifferentialPrivacyClientSideFixedClipping(
                 FedAvg(...)  [or FedAvgM(lr 1.0, momentum 0.9): server-optimizer="fedavgm"],
                 noise_multiplier, clipping_norm, num_sampled_clients)
  ClientApp mods=[secaggplus_mod, fixedclipping_mod]
The message-API DP wrapper (flwr.serverapp.strategy.DifferentialPrivacyClientSideFixedClipping,
the one that takes an accountant) cannot run under SecAggPlusWorkflow, which needs a
legacy Strategy and a LegacyContext. So ε is stated by Flower's own accountant class
(flwr.supercore.privacy_accounting.RdpAccountant, sampling 'no-amplification',
add-or-remove-one: the only configuration the message-API fixed-clipping wrapper accepts),
composed here once per released aggregate, exactly as that wrapper's _compose_release does.

Timing (all in this process, time.perf_counter): t0 = when round 1's fit workflow starts
(SecAgg+ setup stage, which calls configure_fit), t1 = when round N's evaluate workflow
returns; the centralised test evaluation (strategy.evaluate, every round) is timed and
reported separately and subtracted for rounds_per_min. Start-up (SuperLink/SuperNode/
ServerApp processes, node registration, FAB transfer, initial evaluation) is outside.
Wire bytes: snapshots of count_proxy.py's stats file at each round's start and after the
last round.
"""
from __future__ import annotations

import json
import os
import statistics
import time

import numpy as np

from flwr.common import Context, ndarrays_to_parameters
from flwr.server import LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import (DifferentialPrivacyClientSideFixedClipping, FedAvg,
                                  FedAvgM)
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.default_workflows import default_evaluate_workflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, Key as WorkflowKey
from flwr.supercore.privacy_accounting import (GaussianPrivacyEvent, NeighboringRelation,
                                               PrivacyConfig, SamplingMethod)
from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

from . import task

app = ServerApp()
SECAGG_STAGES = ("setup_stage", "share_keys_stage", "collect_masked_vectors_stage",
                 "unmask_stage")


def _proxy_snapshot(path: str):
    if not path:
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class AccountedClientSideFixedClipping(DifferentialPrivacyClientSideFixedClipping):
    """Flower's legacy client-side fixed-clipping DP wrapper, unchanged, plus: compose one
    Gaussian release into Flower's RdpAccountant per successfully noised aggregate
    (as flwr.serverapp.strategy.dp_fixed_clipping's _compose_release), and keep the
    clients' fit metrics."""

    def __init__(self, *a, accountant: RdpAccountant, **kw):
        super().__init__(*a, **kw)
        self.accountant = accountant
        self.epsilon_per_round = {}
        self.fit_metrics = {}

    def aggregate_fit(self, server_round, results, failures):
        self.fit_metrics[server_round] = [dict(r.metrics) for _, r in results]
        params, metrics = super().aggregate_fit(server_round, results, failures)
        if params is not None and self.noise_multiplier > 0:
            self.accountant.compose(GaussianPrivacyEvent(
                noise_multiplier=self.noise_multiplier, sample_size=len(results),
                population_size=self.accountant.config.population_size))
            spent = self.accountant.get_privacy_spent()
            self.epsilon_per_round[server_round] = spent.epsilon
        return params, metrics


class Timed:
    """Wraps a workflow; records per-round start/end and proxy snapshots."""

    def __init__(self, inner, name, rec):
        self.inner, self.name, self.rec = inner, name, rec

    def __call__(self, grid, context):
        rnd = int(context.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND])
        t = time.perf_counter()
        if self.name == "fit":
            self.rec["proxy_start"][rnd] = _proxy_snapshot(self.rec["proxy_path"])
        self.rec[f"{self.name}_start"][rnd] = t
        self.inner(grid, context)
        self.rec[f"{self.name}_end"][rnd] = time.perf_counter()


@app.main()
def main(grid, context: Context) -> None:
    rc = context.run_config
    task.add_paths(rc)
    import torch

    import fedround_common as fc  # bench/federated: test_accuracy, machine header

    task.set_threads(int(rc["threads"]))
    rounds = int(rc["num-server-rounds"])
    seed = int(rc["seed"])
    z, clip = float(rc["noise-multiplier"]), float(rc["clipping-norm"])
    silos = int(rc["num-silos"])
    delta = float(rc["delta"])
    np.random.seed(seed)  # Flower's DP noise uses np.random.normal (global RNG)

    model = task.new_model(seed)  # PyTorch default init
    init = ndarrays_to_parameters(task.get_ndarrays(model))
    import mnist_common

    xt, yt = mnist_common.load_split(str(rc["data"]), "test", flat=True)
    eval_model = task.new_model()
    eval_s, accs = {}, {}

    def evaluate_fn(server_round, ndarrays, _config):
        t = time.perf_counter()
        task.set_ndarrays(eval_model, ndarrays)
        eval_model.eval()
        acc = fc.test_accuracy(eval_model, xt, yt)
        eval_s[server_round] = time.perf_counter() - t
        accs[server_round] = acc
        return 0.0, {"accuracy": acc}

    def fit_config(server_round):
        return {"server-round": server_round}

    common = dict(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=silos,
                  min_evaluate_clients=0, min_available_clients=silos,
                  evaluate_fn=evaluate_fn, on_fit_config_fn=fit_config,
                  initial_parameters=init, accept_failures=False,
                  fit_metrics_aggregation_fn=lambda _m: {})
    opt = str(rc["server-optimizer"])
    if opt == "fedavg":
        inner = FedAvg(**common)
    elif opt == "fedavgm":
        inner = FedAvgM(**common, server_learning_rate=float(rc["server-lr"]),
                        server_momentum=float(rc["server-momentum"]))
    else:
        raise ValueError(f"server-optimizer must be fedavg or fedavgm, not {opt!r}")

    accountant = RdpAccountant(PrivacyConfig(
        target_delta=delta, population_size=silos,
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=SamplingMethod.NO_AMPLIFICATION))
    strategy = AccountedClientSideFixedClipping(
        inner, noise_multiplier=z, clipping_norm=clip, num_sampled_clients=silos,
        accountant=accountant)

    secagg = dict(num_shares=int(rc["num-shares"]),
                  reconstruction_threshold=int(rc["reconstruction-threshold"]),
                  max_weight=float(rc["max-weight"]),
                  clipping_range=float(rc["clipping-range"]),
                  quantization_range=int(rc["quantization-range"]),
                  modulus_range=int(rc["modulus-range"]))
    timeout = float(rc["stage-timeout"])
    sa = SecAggPlusWorkflow(**secagg, timeout=timeout if timeout > 0 else None)
    stage_s = {name: [] for name in SECAGG_STAGES}
    for name in SECAGG_STAGES:  # time each SecAgg+ stage (a thin wrapper, same call)
        def timed(grid_, ctx_, state_, _f=getattr(sa, name), _n=name):
            t = time.perf_counter()
            ok = _f(grid_, ctx_, state_)
            stage_s[_n].append(time.perf_counter() - t)
            return ok
        setattr(sa, name, timed)
    rec = {"proxy_path": str(rc.get("proxy-stats", "")), "proxy_start": {},
           "fit_start": {}, "fit_end": {}, "eval_start": {}, "eval_end": {}}
    workflow = DefaultWorkflow(
        fit_workflow=Timed(sa, "fit", rec),
        evaluate_workflow=Timed(default_evaluate_workflow, "eval", rec))

    # Optional, off by default (0): a shorter poll than Flower's 3 s in the Grid's
    # send_and_receive (flwr/superlink/grid/http_grid.py), to separate polling latency
    # from work. Same logic as Flower's, only the sleep differs.
    grid_poll = float(rc.get("grid-poll-s", 0.0))
    if grid_poll > 0:
        def send_and_receive(messages, *, timeout=None):
            ids = set(grid.push_messages(messages))
            end = time.time() + (timeout if timeout is not None else 0.0)
            out = []
            while timeout is None or time.time() < end:
                got = list(grid.pull_messages(ids))
                out.extend(got)
                ids.difference_update({m.metadata.reply_to_message_id for m in got})
                if not ids:
                    break
                time.sleep(grid_poll)
            return out
        grid.send_and_receive = send_and_receive

    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds),
                           strategy=strategy)
    busy0 = fc.proc_stat_busy()
    workflow(grid, legacy)
    time.sleep(0.3)  # let the proxy flush its last counters (outside the timed window)
    proxy_end = _proxy_snapshot(rec["proxy_path"])
    busy = fc.busy_fraction(busy0, fc.proc_stat_busy())

    done = [r for r in range(1, rounds + 1) if r in rec["eval_end"]]
    result = {"rounds_requested": rounds, "rounds_completed": len(done)}
    if len(done) == rounds and rounds in accs:
        t0, t1 = rec["fit_start"][1], rec["eval_end"][rounds]
        ev = sum(eval_s[r] for r in range(1, rounds + 1))
        wall = t1 - t0
        per_round = [rec["eval_end"][r] - rec["fit_start"][r] - eval_s[r]
                     for r in range(1, rounds + 1)]
        fit_s = [rec["fit_end"][r] - rec["fit_start"][r] for r in range(1, rounds + 1)]
        result.update({
            "rounds_wall_s": wall - ev,
            "rounds_per_min": 60.0 * rounds / (wall - ev),
            "rounds_wall_with_eval_s": wall,
            "rounds_per_min_with_eval": 60.0 * rounds / wall,
            "round_s": per_round,
            "median_round_s": statistics.median(per_round),
            "median_fit_workflow_s": statistics.median(fit_s),
            "median_eval_s": statistics.median(eval_s[r] for r in range(1, rounds + 1)),
            "test_acc_final": accs[rounds],
            "test_acc_per_round": [accs[r] for r in range(1, rounds + 1)],
            "test_acc_initial": accs.get(0),
            "system_busy_fraction": busy,
        })
    fits = [m for r in sorted(strategy.fit_metrics) for m in strategy.fit_metrics[r]]
    result["secagg_stage_s_median"] = {n: statistics.median(v) for n, v in stage_s.items() if v}
    if fits:
        for k in ("client_fit_s", "client_torch_import_s", "client_data_s", "client_train_s",
                  "clientapp_age_at_fit_s"):
            result[k + "_median"] = statistics.median(m[k] for m in fits)
        result["clientapp_pids_distinct"] = len({m["clientapp_pid"] for m in fits})
        result["clientapp_fit_calls"] = len(fits)

    # Wire bytes between SuperNodes and the SuperLink's Fleet API (count_proxy.py).
    snaps = rec["proxy_start"]
    if proxy_end and all(snaps.get(r) for r in range(1, rounds + 1)):
        bounds = [snaps[r] for r in range(1, rounds + 1)] + [proxy_end]
        per_up = [b["c2s"] - a["c2s"] for a, b in zip(bounds, bounds[1:])]
        per_down = [b["s2c"] - a["s2c"] for a, b in zip(bounds, bounds[1:])]
        result.update({
            "wire_up_bytes_per_round_all_clients": statistics.mean(per_up),
            "wire_up_bytes_per_round_per_client": statistics.mean(per_up) / silos,
            "wire_down_bytes_per_round_all_clients": statistics.mean(per_down),
            "wire_down_bytes_per_round_per_client": statistics.mean(per_down) / silos,
            "wire_up_bytes_per_round": per_up,
            "wire_down_bytes_per_round": per_down,
            "wire_connections_during_rounds": proxy_end["connections"] - snaps[1]["connections"],
        })

    # ε as Flower states it (its accountant, per released aggregate), plus a check of
    # the same class composed by hand for `rounds` releases.
    check = RdpAccountant(PrivacyConfig(
        target_delta=delta, population_size=silos,
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=SamplingMethod.NO_AMPLIFICATION))
    check.compose(GaussianPrivacyEvent(noise_multiplier=z, sample_size=silos,
                                       population_size=silos), count=rounds)
    spent = accountant.get_privacy_spent() if accountant.num_releases else None
    result.update({
        "epsilon_flower": spent.epsilon if spent else None,
        "epsilon_releases": accountant.num_releases,
        "epsilon_optimal_order": spent.optimal_order if spent else None,
        "epsilon_per_round": [strategy.epsilon_per_round.get(r)
                              for r in range(1, rounds + 1)],
        "epsilon_by_hand_same_class": check.get_epsilon(delta),
        "delta": delta,
        "epsilon_how": ("flwr.supercore.privacy_accounting.RdpAccountant (dp-accounting "
                        "RDP), sampling_method=no-amplification, add-or-remove-one, one "
                        "GaussianDpEvent(z) composed per noised aggregate by the ServerApp "
                        "(the message-API DP wrapper that takes an accountant cannot run "
                        "under SecAggPlusWorkflow)"),
        "server_optimizer": opt,
        "secaggplus": secagg,
        "noise_stdev_on_mean": z * clip / silos,
        "params": task.param_count(),
        "torch_threads": torch.get_num_threads(),
        "grid_poll_s": grid_poll if grid_poll > 0 else "flower default (3 s)",
    })
    out = str(rc.get("out", ""))
    line = json.dumps(result)
    print("FLOWER_ENGINE_RESULT " + line, flush=True)
    if out:
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out, "w") as f:
            f.write(line + "\n")
