"""The dptrain ServerApp: a pipe between Flower's Grid and `dptrain fl server-step`.

dptrain decides everything (which clients join a round, C, the noise, when a secure round
aborts, what the ledger books); this app only carries messages. Over the child's stdin and
stdout, each frame is a 4-byte big-endian length and a protobuf ``flwr.proto.RecordDict``:

- ``command.kind = "nodes"``: answered with ``nodes.node_ids``, the online nodes;
- ``command.kind = "exchange"`` (``message_type``, ``timeout``) with records ``to.<i>``
  (``node_id``, ``content``: a serialized RecordDict): each content is sent to its node as a
  Flower message; answered with ``from.<i>`` (``node_id`` and ``content`` or ``error``) for
  the replies that came within the timeout;
- ``command.kind = "done"``: the run is over.
"""

from __future__ import annotations

import shlex
import struct
import subprocess
import sys
import time
from typing import BinaryIO, Iterable, Protocol

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()

#: Seconds between pulls for replies.
POLL = 0.2
#: The longest frame accepted (as dptrain's MAX_FRAME).
MAX_FRAME = 1 << 30


class Pipe(Protocol):
    """What the router needs of the Grid (a fake in the tests)."""

    def get_node_ids(self) -> Iterable[int]: ...

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]: ...

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]: ...


def read_frame(stream: BinaryIO) -> bytes | None:
    """One frame, or None at the end of the stream."""
    head = stream.read(4)
    if not head:
        return None
    if len(head) != 4:
        raise ValueError("dptrain's pipe: a truncated frame length")
    (length,) = struct.unpack(">I", head)
    if length > MAX_FRAME:
        raise ValueError(f"dptrain's pipe: a frame of {length} bytes (at most {MAX_FRAME})")
    body = stream.read(length)
    if len(body) != length:
        raise ValueError(f"dptrain's pipe: {len(body)} of {length} bytes")
    return body


def write_frame(stream: BinaryIO, body: bytes) -> None:
    """Writes one frame."""
    stream.write(struct.pack(">I", len(body)))
    stream.write(body)
    stream.flush()


def exchange(grid: Pipe, message_type: str, timeout: float, outgoing: list[tuple[int, bytes]]) -> list[tuple[int, Message]]:
    """Sends each (node, content) and returns the replies that arrive within ``timeout``."""
    messages = [
        Message(
            recorddict_from_proto(ProtoRecordDict.FromString(content)),
            dst_node_id=node,
            message_type=message_type,
            ttl=timeout + 60.0,
        )
        for node, content in outgoing
    ]
    pending = {
        message_id: node
        for message_id, (node, _) in zip(grid.push_messages(messages), outgoing)
        if message_id
    }
    replies = []
    deadline = time.monotonic() + timeout
    while pending:
        for reply in grid.pull_messages(list(pending)):
            node = pending.pop(reply.metadata.reply_to_message_id, None)
            if node is not None:
                replies.append((node, reply))
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(POLL)
    return replies


def answer_of(replies: list[tuple[int, Message]]) -> RecordDict:
    """The ``from.<i>`` records of ``replies``."""
    records = {}
    for i, (node, reply) in enumerate(replies):
        if reply.has_error():
            item = {"node_id": node, "error": f"Flower error {reply.error.code}: {reply.error.reason}"}
        else:
            item = {"node_id": node, "content": recorddict_to_proto(reply.content).SerializeToString()}
        records[f"from.{i}"] = ConfigRecord(item)
    return RecordDict(records)


def route(grid: Pipe, commands: BinaryIO, answers: BinaryIO) -> None:
    """Serves dptrain's commands until ``done`` (or the end of the stream)."""
    while (frame := read_frame(commands)) is not None:
        request = recorddict_from_proto(ProtoRecordDict.FromString(frame))
        command = request.config_records["command"]
        kind = command["kind"]
        if kind == "done":
            return
        if kind == "nodes":
            answer = RecordDict({"nodes": ConfigRecord({"node_ids": sorted(grid.get_node_ids())})})
        elif kind == "exchange":
            outgoing = [
                (int(record["node_id"]), bytes(record["content"]))
                for name, record in request.config_records.items()
                if name.startswith("to.")
            ]
            answer = answer_of(exchange(grid, str(command["message_type"]), float(command["timeout"]), outgoing))
        else:
            raise ValueError(f"dptrain's pipe: unknown command {kind!r}")
        write_frame(answers, recorddict_to_proto(answer).SerializeToString())


def server_step_argv(run_config: dict) -> list[str]:
    """The command line of ``dptrain fl server-step`` from the run config."""
    argv = [str(run_config["dptrain"]), "fl", "server-step", str(run_config["config"])]
    resume = str(run_config.get("resume", ""))
    argv += ["--resume", resume] if resume else ["--out", str(run_config["out"])]
    for item in str(run_config.get("set", "")).split(";"):
        if item.strip():
            argv += ["--set", item.strip()]
    argv += ["--wait-for-nodes", str(float(run_config.get("wait-for-nodes", 60.0)))]
    argv += ["--stage-timeout", str(float(run_config.get("stage-timeout", 300.0)))]
    return argv


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Starts ``dptrain fl server-step`` and routes its messages until it is done."""
    argv = server_step_argv(dict(context.run_config))
    print(f"[dptrain] {shlex.join(argv)}", flush=True)
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        route(grid, child.stdout, child.stdin)
        child.stdin.close()
        summary = child.stdout.read().decode(errors="replace")
        if summary:
            print(summary, end="", flush=True)
    except BaseException:
        child.kill()
        raise
    finally:
        code = child.wait(timeout=600)
    if code != 0:
        raise RuntimeError(f"dptrain fl server-step exited with status {code}")
