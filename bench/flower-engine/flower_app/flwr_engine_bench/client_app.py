"""ClientApp: a PyTorch NumPyClient behind Flower's own SecAgg+ and client-side clipping.

mods=[secaggplus_mod, fixedclipping_mod]: mods[0] is the outermost
(flwr/client/mod/utils.py make_ffn). secaggplus_mod answers the setup, share-keys and
unmask stages itself and calls the inner app only in the collect-masked-vectors stage;
there fixedclipping_mod clips Δ = local − global to L2 ≤ clipping_norm (sent by
DifferentialPrivacyClientSideFixedClipping in the fit config) and returns global + clipped
Δ, which secaggplus_mod then weights, quantises and masks.
"""
from __future__ import annotations

import os
import time

from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import fixedclipping_mod, secaggplus_mod
from flwr.common import Context

from . import task


class SiloClient(NumPyClient):
    def __init__(self, context: Context):
        self.rc = context.run_config
        self.pid = int(context.node_config["partition-id"])

    def fit(self, parameters, config):
        t0 = time.perf_counter()
        age = _process_age_s()
        task.add_paths(self.rc)
        task.set_threads(int(self.rc["threads"]))  # first import of torch here
        t_torch = time.perf_counter()
        x, y = task.load_partition(self.rc, self.pid)
        t_data = time.perf_counter()
        model = task.new_model()
        task.set_ndarrays(model, parameters)
        rnd = int(config["server-round"])
        task.local_train(model, x, y, epochs=int(self.rc["local-epochs"]),
                         batch=int(self.rc["batch-size"]), lr=float(self.rc["lr"]),
                         gen=task.generator(int(self.rc["seed"]), rnd, self.pid))
        out = task.get_ndarrays(model)
        return out, len(y), {"client_fit_s": time.perf_counter() - t0,
                             "client_torch_import_s": t_torch - t0,
                             "client_data_s": t_data - t_torch,
                             "client_train_s": time.perf_counter() - t_data,
                             "clientapp_age_at_fit_s": age,
                             "clientapp_pid": os.getpid()}


def _process_age_s() -> float:
    """Seconds since this flwr-clientapp process started (from /proc), when fit begins:
    interpreter start, Flower imports, app loading, message and context transfer."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def client_fn(context: Context):
    return SiloClient(context).to_client()


app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod, fixedclipping_mod])
