#!/usr/bin/env python3
"""A byte-counting TCP proxy: put it between clients and a server to measure what goes
over the wire in each direction (payload bytes of the TCP stream, i.e. HTTP headers and
bodies, TLS records if any; not TCP/IP headers).

    count_proxy.py --listen 127.0.0.1:19093 --target 127.0.0.1:19092 --stats stats.json

Generic: it knows nothing of Flower or HTTP, so the same proxy can stand in front of a
SuperLink's Fleet API for `flower-supernode` (protobuf over HTTP/1.1 in flwr 1.42) and for
dptrain's `dptrain fl node` (same API, same transport).

Counters: c2s = bytes clients sent to the server, s2c = bytes the server sent back,
connections = accepted connections so far, open = connections open now. The stats file
is rewritten atomically (tmp + rename) at most every --interval seconds while the
counters change, at SIGUSR1 at once, and at exit (SIGTERM/SIGINT); readers (the
ServerApp, the run script) take snapshots of it. Only loopback targets/listeners are
expected here; nothing else is enforced.
"""
import argparse
import asyncio
import json
import os
import signal
import sys
import time

BUF = 1 << 16


class Counters:
    def __init__(self):
        self.c2s = 0
        self.s2c = 0
        self.connections = 0
        self.open = 0
        self.failed_connects = 0
        self.started = time.time()
        self.version = 0  # bumps at every change

    def snapshot(self):
        return {"c2s": self.c2s, "s2c": self.s2c, "connections": self.connections,
                "open": self.open, "failed_connects": self.failed_connects,
                "t": time.time(), "started": self.started, "pid": os.getpid()}


def parse_addr(s):
    host, _, port = s.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {s!r}")
    return host.strip("[]"), int(port)


async def pump(reader, writer, counters, attr):
    try:
        while True:
            data = await reader.read(BUF)
            if not data:
                break
            setattr(counters, attr, getattr(counters, attr) + len(data))
            counters.version += 1
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, OSError):
        pass
    finally:
        # Half-close towards the other side so that HTTP/1.1 keep-alive and
        # request/response framing behave as without the proxy.
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, RuntimeError):
            pass


async def handle(client_reader, client_writer, target, counters, verbose):
    counters.connections += 1
    counters.open += 1
    counters.version += 1
    peer = client_writer.get_extra_info("peername")
    try:
        try:
            server_reader, server_writer = await asyncio.open_connection(*target)
        except OSError as e:
            counters.failed_connects += 1
            if verbose:
                print(f"count_proxy: connect to {target} failed: {e}", file=sys.stderr)
            return
        try:
            await asyncio.gather(
                pump(client_reader, server_writer, counters, "c2s"),
                pump(server_reader, client_writer, counters, "s2c"))
        except asyncio.CancelledError:  # shutdown with the connection still open
            pass
        server_writer.close()
    finally:
        counters.open -= 1
        counters.version += 1
        client_writer.close()
        if verbose:
            print(f"count_proxy: {peer} closed; totals c2s={counters.c2s} "
                  f"s2c={counters.s2c}", file=sys.stderr)


def write_stats(path, counters):
    if not path:
        return
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(counters.snapshot(), f)
    os.replace(tmp, path)


async def main_async(args):
    counters = Counters()
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args.target, counters, args.verbose),
        host=args.listen[0], port=args.listen[1], reuse_address=True)
    write_stats(args.stats, counters)
    print(f"count_proxy: {args.listen[0]}:{args.listen[1]} -> "
          f"{args.target[0]}:{args.target[1]} (pid {os.getpid()})", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: write_stats(args.stats, counters))
    deadline = time.monotonic() + args.max_seconds if args.max_seconds else None
    written = -1
    async with server:
        while not stop.is_set():
            if deadline is not None and time.monotonic() > deadline:
                print("count_proxy: --max-seconds reached, stopping", file=sys.stderr)
                break
            if counters.version != written:
                written = counters.version
                write_stats(args.stats, counters)
            try:
                await asyncio.wait_for(stop.wait(), timeout=args.interval)
            except asyncio.TimeoutError:
                pass
    write_stats(args.stats, counters)
    snap = counters.snapshot()
    print(f"count_proxy: done; c2s={snap['c2s']} s2c={snap['s2c']} "
          f"connections={snap['connections']}", file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", type=parse_addr, required=True, help="HOST:PORT to accept on")
    ap.add_argument("--target", type=parse_addr, required=True, help="HOST:PORT to forward to")
    ap.add_argument("--stats", default=None, help="JSON file with the counters")
    ap.add_argument("--interval", type=float, default=0.1,
                    help="seconds between stats-file rewrites while traffic flows")
    ap.add_argument("--max-seconds", type=float, default=0,
                    help="stop by itself after this long (0: run until SIGTERM)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
