#!/usr/bin/env python3
"""Flower 1.42 SecAgg+ costs at m parameters and k = 11 (issue 15's cost line).

Every timed call is flwr 1.42.0's own code, unmodified; nothing of Flower is re-implemented
or copied here. Run it pinned to one core:

    taskset -c 0 /root/venv-flower/bin/python bench/secagg/flower_primitives.py [--m 1000000]

(A) One client's SecAgg+ work per round, in a neighbourhood of k = num_shares = 11 nodes
    (threshold 6), the client's update a float32 vector of m parameters:
    A2 "secaggplus_mod": Flower's real client mod, all four stages, driven with real
       Message/Context objects; the time of the ClientApp's own train call (call_next) is
       subtracted. This includes Flower's plumbing (state saved to a ConfigRecord after every
       stage, FitRes <-> RecordDict conversion, deserialising the update).
    Upload sizes are read off the mod's real replies: the share-keys ciphertexts, the
    masked_params list (bytes and bytes/parameter) and the whole reply Message as protobuf.
    The other 10 nodes run Flower's real mod (untimed) so that the ciphertexts are genuine.
    (The name A2 is kept from an earlier version, whose A1 was a per-call breakdown made
    from a copy of the mod's control flow; removed, see README.md.)
(B) The server, 100 clients (each with Flower's real client mod), neighbours chosen as
    SecAggPlusWorkflow.setup_stage does (random.shuffle + ring, num_shares = 11), 10 clients
    dropped after the share-keys stage (they send no masked vector), t = 6:
    B1 "collect_masked_vectors_stage": SecAggPlusWorkflow's own method, replayed with a grid
       that returns the 90 recorded client replies (deserialise 90 uploads with
       bytes_to_ndarray, parameters_addition, parameters_mod, FitRes conversion).
    B2 "unmask_stage": SecAggPlusWorkflow's own method, replayed with the 90 recorded unmask
       replies: combine_shares for 100 secrets (90 self-mask seeds, 10 PEM private keys
       sk1), pseudo_rand_gen for 90 self masks and 10 x 10 pairwise masks of the dropped
       clients (each after generate_shared_key(bytes_to_private_key(sk1), ...)),
       parameters_subtraction/_addition, parameters_mod, factor_extract, dequantize,
       ndarrays_to_parameters; the strategy's aggregate_fit is a stub.
    A reference line times Flower's combine_shares with exactly t = 6 shares.
    The unmasked result is checked against the mean of the 90 survivors' inputs.

Median and min over --repeats (default 5) repeats, after one warm-up repeat.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import types

import numpy as np

from flwr.supercore.task_identity import TaskIdentity

# Messages need a run identity outside a running SuperNode/ServerApp.
TaskIdentity.run_id = 1
TaskIdentity.task_id = 1
TaskIdentity.node_id = 1

import cryptography  # noqa: E402
import Crypto  # noqa: E402
import flwr  # noqa: E402
from flwr.app import ConfigRecord, Context, Message, RecordDict  # noqa: E402
from flwr.app.message_type import MessageType  # noqa: E402
import importlib  # noqa: E402

# the package re-exports the function under the module's name; take the module
smod = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")
from flwr.common import (  # noqa: E402
    Code,
    FitIns,
    FitRes,
    Parameters,
    Status,
    bytes_to_ndarray,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.crypto.shamir import (  # noqa: E402
    combine_shares,
    create_shares,
)
from flwr.common.secure_aggregation.secaggplus_constants import (  # noqa: E402
    RECORD_KEY_CONFIGS,
    Key,
    Stage,
)
from flwr.compat.common import recorddict_compat as compat  # noqa: E402
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD  # noqa: E402
from flwr.server.workflow.constant import Key as WorkflowKey  # noqa: E402
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import (  # noqa: E402
    SecAggPlusWorkflow,
    WorkflowState,
)
from flwr.supercore.primitives.asymmetric import (  # noqa: E402
    generate_key_pairs,
    private_key_to_bytes,
)

pc = time.perf_counter

# SecAggPlusWorkflow defaults, except num_shares / reconstruction_threshold.
NUM_SHARES = 11
THRESHOLD = 6
CLIPPING_RANGE = 8.0
QUANTIZATION_RANGE = 4194304  # 2**22
MODULUS_RANGE = 4294967296  # 2**32
MAX_WEIGHT = 1000.0
NUM_EXAMPLES = 100  # the client's weight w (<= MAX_WEIGHT)

SETUP_CFG = {
    Key.SAMPLE_NUMBER: 0,  # filled in
    Key.SHARE_NUMBER: NUM_SHARES,
    Key.THRESHOLD: THRESHOLD,
    Key.CLIPPING_RANGE: CLIPPING_RANGE,
    Key.TARGET_RANGE: QUANTIZATION_RANGE,
    Key.MOD_RANGE: MODULUS_RANGE,
    Key.MAX_WEIGHT: MAX_WEIGHT,
}


# --------------------------------------------------------------------------- helpers
def stats_ms(xs: list[float]) -> str:
    return f"median {1e3 * statistics.median(xs):9.2f} ms   min {1e3 * min(xs):9.2f} ms"


def msg_to(nid: int, stage: str, cfg: dict, content: RecordDict | None = None) -> Message:
    content = RecordDict() if content is None else content
    rec = ConfigRecord({Key.STAGE: stage, **cfg})
    content.config_records[RECORD_KEY_CONFIGS] = rec
    return Message(content=content, dst_node_id=nid, message_type=MessageType.TRAIN,
                   group_id="1")


def reply_cfg(reply: Message) -> ConfigRecord:
    return reply.content.config_records[RECORD_KEY_CONFIGS]


class Node:
    """One client: Flower's real secaggplus_mod with its own Context."""

    def __init__(self, nid: int, params: Parameters) -> None:
        self.nid = nid
        self.ctx = Context(run_id=1, node_id=nid, node_config={}, state=RecordDict(),
                           run_config={})
        self.params = params  # the ClientApp's (already serialised) update
        self.call_next_s = 0.0
        self.mod_s: dict[str, float] = {}

    def _call_next(self, msg: Message, ctxt: Context) -> Message:
        # The ClientApp's train function: returns the update as a FitRes RecordDict.
        t0 = pc()
        fitres = FitRes(Status(Code.OK, ""), self.params, NUM_EXAMPLES, {})
        out = Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)
        self.call_next_s += pc() - t0
        return out

    def handle(self, msg: Message) -> Message:
        stage = msg.content.config_records[RECORD_KEY_CONFIGS][Key.STAGE]
        self.call_next_s = 0.0
        t0 = pc()
        out = smod.secaggplus_mod(msg, self.ctx, self._call_next)
        self.mod_s[stage] = pc() - t0 - self.call_next_s
        return out


# ----------------------------------------------------------------------- A: client
def client_repeat(m: int, rng: np.random.Generator) -> dict:
    """One round of an 11-node neighbourhood; the node under test is timed."""
    ids = [int(x) for x in rng.choice(2**62, size=NUM_SHARES, replace=False)]
    test_nid = ids[NUM_SHARES // 2]
    x = (0.1 * rng.standard_normal(m)).astype(np.float32)
    params = ndarrays_to_parameters([x])
    others = {nid: Node(nid, params) for nid in ids if nid != test_nid}
    cfg = dict(SETUP_CFG, **{Key.SAMPLE_NUMBER: NUM_SHARES})

    me = Node(test_nid, params)
    r = reply_cfg(me.handle(msg_to(test_nid, Stage.SETUP, cfg)))
    pks = {test_nid: [r[Key.PUBLIC_KEY_1], r[Key.PUBLIC_KEY_2]]}
    for nid, node in others.items():
        r = reply_cfg(node.handle(msg_to(nid, Stage.SETUP, cfg)))
        pks[nid] = [r[Key.PUBLIC_KEY_1], r[Key.PUBLIC_KEY_2]]

    # share keys: every node gets every node's keys (k = n = 11: all are neighbours)
    fwd: dict[int, tuple[list, list]] = {nid: ([], []) for nid in ids}
    key_cfg = {str(nid): pks[nid] for nid in ids}
    for nid, node in others.items():
        r = reply_cfg(node.handle(msg_to(nid, Stage.SHARE_KEYS, dict(key_cfg))))
        for dst, c in zip(r[Key.DESTINATION_LIST], r[Key.CIPHERTEXT_LIST], strict=True):
            fwd[dst][0].append(nid)
            fwd[dst][1].append(c)
    srcs, ctxts = fwd[test_nid]
    active = list(ids)

    r = reply_cfg(me.handle(msg_to(test_nid, Stage.SHARE_KEYS, dict(key_cfg))))
    share_bytes = sum(len(c) for c in r[Key.CIPHERTEXT_LIST])
    fitins = compat.fitins_to_recorddict(FitIns(Parameters([], ""), {}), True)
    rep = me.handle(msg_to(test_nid, Stage.COLLECT_MASKED_VECTORS,
                           {Key.CIPHERTEXT_LIST: ctxts, Key.SOURCE_LIST: srcs}, fitins))
    upload = reply_cfg(rep)[Key.MASKED_PARAMETERS]
    me.handle(msg_to(test_nid, Stage.UNMASK, {Key.ACTIVE_NODE_ID_LIST: active,
                                              Key.DEAD_NODE_ID_LIST: []}))
    try:
        from flwr.common.serde import message_to_proto
        proto_bytes = message_to_proto(rep).ByteSize()
    except Exception as e:  # pragma: no cover - report only
        proto_bytes = f"n/a ({type(e).__name__})"
    return {"mod": dict(me.mod_s), "upload_bytes": sum(len(b) for b in upload),
            "proto_bytes": proto_bytes, "share_bytes": share_bytes,
            "dtype": str(bytes_to_ndarray(upload[-1]).dtype)}


# ----------------------------------------------------------------------- B: server
class ReplayGrid:
    """Stands in for the Grid: returns recorded replies (or routes to live nodes)."""

    def __init__(self, nodes: dict[int, Node] | None = None, dropped: set[int] = frozenset(),
                 replies: list[Message] | None = None) -> None:
        self.nodes, self.dropped, self.replies = nodes, dropped, replies
        self.recorded: list[Message] = []

    def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001
        if self.replies is not None:
            return list(self.replies)
        out = []
        for msg in messages:
            nid = msg.metadata.dst_node_id
            if nid in self.dropped:
                continue
            out.append(self.nodes[nid].handle(msg))
        self.recorded = out
        return out


class StubStrategy:
    def __init__(self) -> None:
        self.result = None

    def aggregate_fit(self, server_round, results, failures):  # noqa: ANN001
        self.result = results[0][1].parameters if results else None
        return None, {}


def make_context(strategy: StubStrategy):
    return types.SimpleNamespace(
        state=types.SimpleNamespace(config_records={
            MAIN_CONFIGS_RECORD: ConfigRecord({WorkflowKey.CURRENT_ROUND: 1})}),
        strategy=strategy,
        history=None,
    )


def server_setup(m: int, n: int, n_drop: int, seed: int) -> dict:
    """Run setup and share-keys with 100 real client mods; record stage 2 and 3 replies."""
    rng = np.random.default_rng(seed)
    ids = [int(x) for x in rng.choice(2**62, size=n, replace=False)]
    # Neighbours exactly as SecAggPlusWorkflow.setup_stage builds them.
    sampled = list(ids)
    random.Random(seed).shuffle(sampled)
    half = NUM_SHARES >> 1
    neighbours = {nid: {sampled[(i + off) % n] for off in range(-half, half + 1)}
                  for i, nid in enumerate(sampled)}
    while True:  # dropped after share keys; every secret must stay recoverable
        dropped = set(int(x) for x in rng.choice(ids, size=n_drop, replace=False))
        if all(len(neighbours[i] - dropped) >= THRESHOLD for i in ids):
            break
    survivors = [i for i in ids if i not in dropped]

    inputs: dict[int, Parameters] = {}
    mean = np.zeros(m, dtype=np.float64)
    for nid in ids:
        x = (0.1 * rng.standard_normal(m)).astype(np.float32)
        inputs[nid] = ndarrays_to_parameters([x])
        if nid not in dropped:
            mean += x
    mean /= len(survivors)
    nodes = {nid: Node(nid, inputs[nid]) for nid in ids}
    cfg = dict(SETUP_CFG, **{Key.SAMPLE_NUMBER: n})

    pks = {}
    for nid in ids:
        r = reply_cfg(nodes[nid].handle(msg_to(nid, Stage.SETUP, cfg)))
        pks[nid] = [r[Key.PUBLIC_KEY_1], r[Key.PUBLIC_KEY_2]]
    fwd_c = {nid: [] for nid in ids}
    fwd_s = {nid: [] for nid in ids}
    for nid in ids:
        kc = {str(j): pks[j] for j in neighbours[nid]}
        r = reply_cfg(nodes[nid].handle(msg_to(nid, Stage.SHARE_KEYS, kc)))
        for dst, c in zip(r[Key.DESTINATION_LIST], r[Key.CIPHERTEXT_LIST], strict=True):
            fwd_c[dst].append(c)
            fwd_s[dst].append(nid)

    def fresh_state(active: set[int]) -> WorkflowState:
        return WorkflowState(
            nid_to_proxies={nid: types.SimpleNamespace(node_id=nid) for nid in ids},
            nid_to_fitins={nid: compat.fitins_to_recorddict(FitIns(Parameters([], ""), {}),
                                                            True) for nid in ids},
            sampled_node_ids=set(ids),
            active_node_ids=set(active),
            num_shares=NUM_SHARES,
            threshold=THRESHOLD,
            clipping_range=CLIPPING_RANGE,
            quantization_range=QUANTIZATION_RANGE,
            mod_range=MODULUS_RANGE,
            max_weight=MAX_WEIGHT,
            nid_to_neighbours=copy.deepcopy(neighbours),
            nid_to_publickeys=pks,
            forward_srcs={k: list(v) for k, v in fwd_s.items()},
            forward_ciphertexts={k: list(v) for k, v in fwd_c.items()},
        )

    wf = SecAggPlusWorkflow(num_shares=NUM_SHARES, reconstruction_threshold=THRESHOLD)
    # Stage 2, live: 90 clients run Flower's mod (the 10 dropped send nothing).
    st = fresh_state(set(ids))
    grid = ReplayGrid(nodes, dropped)
    ok = wf.collect_masked_vectors_stage(grid, make_context(StubStrategy()), st)
    assert ok and st.active_node_ids == set(survivors)
    collect_replies = grid.recorded
    aggregate = st.aggregate_ndarrays
    client_collect_s = [nodes[i].mod_s[Stage.COLLECT_MASKED_VECTORS] for i in survivors]
    client_round_s = [sum(nodes[i].mod_s.values()) for i in survivors]
    # Stage 3, live: survivors answer with their shares.
    st = fresh_state(set(survivors))
    st.aggregate_ndarrays = aggregate
    grid = ReplayGrid(nodes, dropped)
    strat = StubStrategy()
    ok = wf.unmask_stage(grid, make_context(strat), st)
    assert ok
    unmask_replies = grid.recorded
    got = parameters_to_ndarrays(strat.result)[0] if strat.result else None
    for nid in survivors:
        client_round_s[survivors.index(nid)] += nodes[nid].mod_s[Stage.UNMASK]
    client_stage_s = {k: [nodes[i].mod_s[k] for i in survivors] for k in Stage.all()}
    return dict(ids=ids, survivors=survivors, client_stage_s=client_stage_s, dropped=dropped, wf=wf,
                fresh_state=fresh_state, collect_replies=collect_replies,
                unmask_replies=unmask_replies, aggregate=aggregate, mean=mean,
                first_result=got, client_collect_s=client_collect_s,
                client_round_s=client_round_s)


# --------------------------------------------------------------------------- main
def header() -> None:
    model = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True,
                           text=True).stdout.strip()
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(model)
    print(f"nproc: {os.cpu_count()}   affinity: {sorted(os.sched_getaffinity(0))}")
    print(f"loadavg at start: {open('/proc/loadavg').read().strip()}")
    print(f"python {platform.python_version()}  flwr {flwr.__version__}  "
          f"numpy {np.__version__}  cryptography {cryptography.__version__}  "
          f"pycryptodome {Crypto.__version__}")
    print(f"num_shares {NUM_SHARES}  threshold {THRESHOLD}  clipping_range {CLIPPING_RANGE}  "
          f"quantization_range {QUANTIZATION_RANGE}  modulus_range {MODULUS_RANGE}  "
          f"max_weight {MAX_WEIGHT}  num_examples {NUM_EXAMPLES}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--dropouts", type=int, default=10)
    ap.add_argument("--skip-server", action="store_true")
    a = ap.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    np.random.seed(0)  # quantize's stochastic rounding uses the global RandomState
    header()
    if len(os.sched_getaffinity(0)) != 1:
        print("WARNING: not pinned to one core (run under taskset -c 0)")
    m, R = a.m, a.repeats
    print(f"m = {m} parameters (float32 update), repeats = {R} (+1 warm-up)\n")

    # ---------------- A: client
    rng = np.random.default_rng(1)
    A2 = []
    for r in range(R + 1):
        res = client_repeat(m, rng)
        if r > 0:
            A2.append(res)
    print("== (A) one client, one round (k = 11 neighbours incl. itself, t = 6) ==")
    print("A2 Flower's secaggplus_mod end to end (train call_next time subtracted):")
    for st_name in Stage.all():
        print(f"  stage {st_name:36s} {stats_ms([x['mod'][st_name] for x in A2])}")
    print(f"  {'TOTAL per round':42s} {stats_ms([sum(x['mod'].values()) for x in A2])}")
    print(f"  upload: masked_params {A2[0]['upload_bytes']} bytes = "
          f"{A2[0]['upload_bytes'] / m:.4f} bytes/parameter (dtype {A2[0]['dtype']}, .npy); "
          f"whole reply Message as protobuf: {A2[0]['proto_bytes']} bytes")
    print(f"  upload: share-keys ciphertexts {A2[0]['share_bytes']} bytes")
    print(f"loadavg after (A): {open('/proc/loadavg').read().strip()}\n", flush=True)

    if a.skip_server:
        return
    # ---------------- B: server
    n, nd = a.clients, a.dropouts
    t0 = pc()
    S = server_setup(m, n, nd, seed=2)
    print(f"== (B) server, {n} clients, {nd} dropped after share keys, t = {THRESHOLD}, "
          f"num_shares = {NUM_SHARES} ==")
    print(f"(untimed setup with {n} real client mods: {pc() - t0:.1f} s)")
    wf, fresh_state = S["wf"], S["fresh_state"]
    survivors = set(S["survivors"])
    B1, B2, got_wf = [], [], None
    for r in range(R + 1):
        # B1: collect_masked_vectors_stage (server side: the sum of the 90 uploads)
        st = fresh_state(set(S["ids"]))
        grid = ReplayGrid(replies=S["collect_replies"])
        t0 = pc()
        wf.collect_masked_vectors_stage(grid, make_context(StubStrategy()), st)
        t1 = pc()
        assert all(np.array_equal(x, y) for x, y in zip(st.aggregate_ndarrays,
                                                        S["aggregate"], strict=True))
        # B2: unmask_stage
        st = fresh_state(survivors)
        st.aggregate_ndarrays = [x.copy() for x in S["aggregate"]]
        st.legacy_results = [(None, types.SimpleNamespace(parameters=None))]
        strat = StubStrategy()
        grid = ReplayGrid(replies=S["unmask_replies"])
        t2 = pc()
        ok = wf.unmask_stage(grid, make_context(strat), st)
        t3 = pc()
        assert ok
        if r > 0:
            B1.append(t1 - t0)
            B2.append(t3 - t2)
        got_wf = parameters_to_ndarrays(strat.result)[0]
    print("B1 SecAggPlusWorkflow.collect_masked_vectors_stage (sum of 90 uploads):")
    print(f"  {'TOTAL':42s} {stats_ms(B1)}")
    print("B2 SecAggPlusWorkflow.unmask_stage (90 seed + 10 sk1 reconstructions, masks):")
    print(f"  {'TOTAL':42s} {stats_ms(B2)}")
    print(f"  B1 + B2 (sum and unmask): median "
          f"{1e3 * (statistics.median(B1) + statistics.median(B2)):.2f} ms")

    # Shamir combine with exactly t shares, for reference
    seed_c, pem_c = [], []
    sk1 = private_key_to_bytes(generate_key_pairs()[0])
    sh_seed = create_shares(os.urandom(32), THRESHOLD, NUM_SHARES)
    sh_pem = create_shares(sk1, THRESHOLD, NUM_SHARES)
    for _ in range(R):
        t0 = pc(); combine_shares(sh_seed[:THRESHOLD]); seed_c.append(pc() - t0)
        t0 = pc(); combine_shares(sh_pem[:THRESHOLD]); pem_c.append(pc() - t0)
    print(f"  reference, combine_shares with exactly t = {THRESHOLD} shares: seed "
          f"{stats_ms(seed_c)}; PEM sk1 ({len(sk1)} bytes) {stats_ms(pem_c)}")

    # correctness
    err = float(np.max(np.abs(got_wf - S["mean"])))
    step = 2 * CLIPPING_RANGE / QUANTIZATION_RANGE
    print(f"check: unmasked mean of {len(survivors)} survivors vs true mean: max abs err "
          f"{err:.3e} (quantisation step {step:.3e})")
    cr = S["client_round_s"]
    per_stage = "; ".join(
        f"{k} {1e3 * statistics.median(v):.2f}" for k, v in S["client_stage_s"].items())
    print(f"(side note, one run each: secaggplus_mod time per round of the 90 survivors of "
          f"the 100-client run (all 4 stages): median {1e3 * statistics.median(cr):.2f} ms, "
          f"min {1e3 * min(cr):.2f} ms; per-stage medians in ms: {per_stage})")
    print(f"loadavg at end: {open('/proc/loadavg').read().strip()}")
    if err > 1e-3:
        print("CHECK FAILED")
        sys.exit(1)


if __name__ == "__main__":
    main()
