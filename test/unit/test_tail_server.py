"""The cloud's batching (core/tail_server.py): a lone drone's request is never held for a batch."""
import threading

import pytest
import torch

from spinn_ros.core import codec
from spinn_ros.core.model_ref import load_model
from spinn_ros.core.tail_server import TailServer

LONG_WAIT_MS = 5000.0


@pytest.fixture
def server():
    model, model_id = load_model("random:small:0")
    s = TailServer(model, model_id, max_batch=8, max_wait_ms=LONG_WAIT_MS)
    yield s
    s.close()


def submit(server: TailServer, rid: int, drone: str, replies: list, done: threading.Semaphore) -> None:
    frame = codec.encode_request(torch.rand(codec.split_shapes(server.model)[1]), request_id=rid,
                                 model_id=server.model_id, split=1, exit_threshold=1.0, dtype=codec.Dtype.F32)
    server.submit(frame, lambda r: (replies.append(codec.decode_reply(r)), done.release()), drone=drone)


def test_a_lone_drone_is_answered_without_the_batch_wait(server):
    replies, done = [], threading.Semaphore(0)
    submit(server, 1, "d1", replies, done)
    assert done.acquire(timeout=LONG_WAIT_MS / 1e3 / 2), "a lone drone's request waited for a batch"


def test_with_another_drone_sending_the_first_request_waits_for_a_batch(server):
    replies, done = [], threading.Semaphore(0)
    submit(server, 1, "d2", replies, done)          # alone so far: answered at once
    assert done.acquire(timeout=LONG_WAIT_MS / 1e3 / 2)
    submit(server, 2, "d1", replies, done)          # d2 sent just now: this one waits for company
    submit(server, 3, "d2", replies, done)
    assert done.acquire(timeout=30) and done.acquire(timeout=30)
    assert [r.batch_size for r in replies[1:]] == [2, 2]
