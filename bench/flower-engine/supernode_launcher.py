"""`flower-supernode`, optionally with a shorter idle poll (a variant, off by default).

Stock flwr 1.42 SuperNodes sleep 3 s after every pull that brings no message
(flwr/supernode/start_client_internal.py, `time.sleep(3)` in the main loop); that sleep is
not configurable. With FLOWER_BENCH_SUPERNODE_POLL_S set (seconds), this launcher gives
that module a `time` whose sleep(3) sleeps that long instead (every other sleep is
unchanged), then runs the stock `flower-supernode` entry point with the same arguments.
Without the variable it is exactly `flower-supernode`.
"""
import os
import sys
import time as _time
import types

poll = os.environ.get("FLOWER_BENCH_SUPERNODE_POLL_S")
if poll:
    import flwr.supernode.start_client_internal as sci

    idle = float(poll)
    shim = types.ModuleType("time_shim")
    shim.__dict__.update(_time.__dict__)
    shim.sleep = lambda s: _time.sleep(idle if s == 3 else s)
    sci.time = shim
    print(f"supernode_launcher: idle poll {idle} s instead of 3 s", file=sys.stderr)

from flwr.supernode.cli import flower_supernode  # noqa: E402

sys.argv[0] = "flower-supernode"
sys.exit(flower_supernode())
