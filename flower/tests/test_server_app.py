"""Tests of the dptrain ServerApp's router, against a fake Grid (no SuperLink).

Run with the flwr venv's Python: ``python -m unittest discover -s flower/tests``.
The whole path (SuperLink, ServerApp, dptrain nodes) is tests/it/flower.rs's contract test.
"""

import io
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from flwr.app import ConfigRecord, Error, Message, RecordDict  # noqa: E402
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto  # noqa: E402
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict  # noqa: E402

from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from dptrain_flower import server_app  # noqa: E402

# What the ServerApp's runtime sets before main() runs.
TaskIdentity.run_id = 1
TaskIdentity.node_id = 1
TaskIdentity.task_id = 1

BIG_NODE = 2**64 - 5  # above 2^63: Flower writes it as uint64


class FakeGrid:
    """Answers each node's message at once, with an error, or never."""

    def __init__(self, behaviour):
        self.behaviour = behaviour  # node -> "echo" | "error" | "silent"
        self.sent = []
        self.outbox = {}

    def get_node_ids(self):
        return list(self.behaviour)

    def push_messages(self, messages):
        ids = []
        for i, message in enumerate(messages):
            message_id = f"m{len(self.sent)}-{i}"
            self.sent.append(message)
            node = message.metadata.dst_node_id
            kind = self.behaviour[node]
            if kind != "silent":
                reply = Message(
                    RecordDict({"config": ConfigRecord({"echo": message.content["config"]["x"] + 1})}),
                    reply_to=message,
                ) if kind == "echo" else Message(Error(code=2, reason="boom"), reply_to=message)
                reply.metadata.__dict__["_reply_to_message_id"] = message_id
                self.outbox[message_id] = reply
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids):
        return [self.outbox.pop(i) for i in list(message_ids) if i in self.outbox]


def frame(records):
    body = recorddict_to_proto(RecordDict(records)).SerializeToString()
    out = io.BytesIO()
    server_app.write_frame(out, body)
    return out.getvalue()


def content(x):
    return recorddict_to_proto(RecordDict({"config": ConfigRecord({"x": x})})).SerializeToString()


def answers(stream):
    stream.seek(0)
    out = []
    while (body := server_app.read_frame(stream)) is not None:
        out.append(recorddict_from_proto(ProtoRecordDict.FromString(body)))
    return out


class RouterTest(unittest.TestCase):
    def test_nodes_exchange_and_done(self):
        grid = FakeGrid({7: "echo", BIG_NODE: "error", 9: "silent"})
        commands = io.BytesIO(
            frame({"command": ConfigRecord({"kind": "nodes"})})
            + frame(
                {
                    "command": ConfigRecord({"kind": "exchange", "message_type": "train.keys", "timeout": 0.5}),
                    "to.0": ConfigRecord({"node_id": 7, "content": content(41)}),
                    "to.1": ConfigRecord({"node_id": BIG_NODE, "content": content(1)}),
                    "to.2": ConfigRecord({"node_id": 9, "content": content(2)}),
                }
            )
            + frame({"command": ConfigRecord({"kind": "done"})})
            + frame({"command": ConfigRecord({"kind": "nodes"})})  # after done: never read
        )
        out = io.BytesIO()
        server_app.route(grid, commands, out)
        nodes, replies = answers(out)
        self.assertEqual(sorted(nodes["nodes"]["node_ids"]), [7, 9, BIG_NODE])
        self.assertEqual([m.metadata.message_type for m in grid.sent], ["train.keys"] * 3)
        self.assertEqual([m.metadata.dst_node_id for m in grid.sent], [7, BIG_NODE, 9])
        by_node = {r["node_id"]: r for r in replies.config_records.values()}
        self.assertEqual(set(by_node), {7, BIG_NODE}, "the silent node has no reply")
        echoed = recorddict_from_proto(ProtoRecordDict.FromString(by_node[7]["content"]))
        self.assertEqual(echoed["config"]["echo"], 42)
        self.assertIn("boom", by_node[BIG_NODE]["error"])

    def test_a_truncated_or_oversized_frame_is_an_error(self):
        whole = frame({"command": ConfigRecord({"kind": "nodes"})})
        with self.assertRaisesRegex(ValueError, "of"):
            server_app.read_frame(io.BytesIO(whole[:-1]))
        with self.assertRaisesRegex(ValueError, "length"):
            server_app.read_frame(io.BytesIO(whole[:2]))
        with self.assertRaisesRegex(ValueError, "at most"):
            server_app.read_frame(io.BytesIO(b"\xff\xff\xff\xff"))
        self.assertIsNone(server_app.read_frame(io.BytesIO(b"")))

    def test_an_unknown_command_is_refused(self):
        commands = io.BytesIO(frame({"command": ConfigRecord({"kind": "format-disk"})}))
        with self.assertRaisesRegex(ValueError, "unknown command"):
            server_app.route(FakeGrid({}), commands, io.BytesIO())

    def test_the_command_line_follows_the_run_config(self):
        argv = server_app.server_step_argv(
            {"dptrain": "/bin/dptrain", "config": "c.toml", "out": "o", "set": "a=1; b=2", "resume": "",
             "wait-for-nodes": 5, "stage-timeout": 7.5}
        )
        self.assertEqual(
            argv,
            ["/bin/dptrain", "fl", "server-step", "c.toml", "--out", "o", "--set", "a=1", "--set", "b=2",
             "--wait-for-nodes", "5.0", "--stage-timeout", "7.5"],
        )
        resumed = server_app.server_step_argv({"dptrain": "d", "config": "c", "out": "o", "resume": "r"})
        self.assertEqual(resumed[4:6], ["--resume", "r"])


if __name__ == "__main__":
    unittest.main()
