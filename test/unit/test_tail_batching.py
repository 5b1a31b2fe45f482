"""TailServer (core/tail_server.py) beyond test/unit/test_tail_server.py's adaptive wait: batching at one
split point up to max_batch, per-row answers equal to running the tail alone, malformed frames
answered at once with an error, late and overflowing requests, and close()."""
from __future__ import annotations

import math
import threading
import time

import pytest
import torch

from spinn_ros.core import codec
from spinn_ros.core.model_ref import load_model
from spinn_ros.core.progressive import run_tail
from spinn_ros.core.tail_server import TailServer

LONG_WAIT_MS = 10_000.0       # batches here fill up (or a test fails): nobody should wait this long (and a
                              # loaded machine's computing stays well under half of it)


@pytest.fixture(scope="module")
def model():
    return load_model("random:small:0")


@pytest.fixture
def make_server(model):
    servers = []

    def make(**kwargs) -> TailServer:
        kwargs.setdefault("adaptive_wait", False)           # batch whoever sends: these tests are one "drone"
        s = TailServer(*model, **kwargs)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


class Replies:
    """A respond callback per request; decoded replies by request id."""

    def __init__(self):
        self.by_id: dict[int, object] = {}
        self.raw: list[bytes] = []
        self._sem = threading.Semaphore(0)

    def respond(self, rid: int):
        def callback(frame: bytes) -> None:
            self.raw.append(frame)
            self.by_id[rid] = codec.decode_reply(frame)
            self._sem.release()
        return callback

    def wait(self, n: int, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        for i in range(n):
            assert self._sem.acquire(timeout=max(end - time.monotonic(), 0)), f"only {i} of {n} answered"


def activation(server: TailServer, split: int, seed: int) -> torch.Tensor:
    return torch.rand(server.shapes[split], generator=torch.Generator().manual_seed(seed))


def request(server: TailServer, rid: int, split: int = 1, threshold: float = 1.0, x: torch.Tensor | None = None,
            **kwargs) -> bytes:
    x = activation(server, split, rid) if x is None else x
    return codec.encode_request(x, request_id=rid, model_id=server.model_id, split=split, exit_threshold=threshold,
                                dtype=codec.Dtype.F32, codec=codec.Codec.NONE, **kwargs)


def tail_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "spinn-tail"}


@pytest.mark.parametrize("kwargs", [{"max_batch": 0}, {"max_wait_ms": -1.0}, {"max_queue": 0}])
def test_bad_settings_are_refused(model, kwargs):
    with pytest.raises(ValueError, match="max_batch and max_queue must be >= 1 and max_wait_ms >= 0"):
        TailServer(*model, **kwargs)


def test_requests_at_one_split_run_as_one_full_batch_without_waiting(make_server):
    s = make_server(max_batch=4, max_wait_ms=LONG_WAIT_MS)
    frames = [request(s, rid, split=2) for rid in range(1, 5)]
    out = Replies()
    start = time.monotonic()
    for rid, f in enumerate(frames, 1):
        s.submit(f, out.respond(rid), drone="d1")
    out.wait(4)
    assert time.monotonic() - start < LONG_WAIT_MS / 1e3 / 2, "a full batch waited for max_wait_ms"
    assert sorted(out.by_id) == [1, 2, 3, 4]
    assert [r.batch_size for r in out.by_id.values()] == [4] * 4
    assert (s.stats.batches, s.stats.served) == (1, 4)
    load = s.load()
    assert (load["batch_size"], load["served"], load["batches"], load["queue_depth"]) == (4.0, 4, 1, 0)
    assert load["model_id"] == s.model_id and load["compute_ms"] > 0


def test_max_batch_is_honoured(make_server):
    s = make_server(max_batch=3, max_wait_ms=LONG_WAIT_MS)
    frames = [request(s, rid) for rid in range(1, 7)]
    out = Replies()
    for rid, f in enumerate(frames, 1):
        s.submit(f, out.respond(rid))
    out.wait(6)
    assert [out.by_id[rid].batch_size for rid in range(1, 7)] == [3] * 6
    assert s.stats.batches == 2 and list(s.stats.recent_batch_sizes) == [3, 3]


def test_a_batch_never_mixes_split_points(make_server):
    s = make_server(max_batch=2, max_wait_ms=LONG_WAIT_MS)
    splits = {1: 1, 2: 3, 3: 1, 4: 3}                       # interleaved in the queue
    frames = {rid: request(s, rid, split=sp) for rid, sp in splits.items()}
    out = Replies()
    start = time.monotonic()
    for rid, f in frames.items():
        s.submit(f, out.respond(rid))
    out.wait(4)
    assert time.monotonic() - start < LONG_WAIT_MS / 1e3 / 2
    assert all(isinstance(r, codec.Reply) and r.batch_size == 2 for r in out.by_id.values()), out.by_id
    assert all(out.by_id[rid].exit_index >= sp for rid, sp in splits.items()), "answered from an exit before the split"


def test_each_row_of_a_batch_answers_as_if_it_ran_alone(make_server, model):
    """Rows share one batch but each leaves at its own exit, with its own threshold."""
    net = model[0]
    thresholds = [0.0, 2.0, 0.55, math.inf, 1.0]           # first tail exit, none early, data-dependent, plain, ...
    split = 2
    s = make_server(max_batch=len(thresholds), max_wait_ms=LONG_WAIT_MS)
    xs = {rid: activation(s, split, 100 + rid) for rid in range(1, len(thresholds) + 1)}
    frames = {rid: request(s, rid, split, thr, xs[rid], sent_ns=1_000 + rid) for rid, thr in zip(xs, thresholds)}
    out = Replies()
    for rid, f in frames.items():
        s.submit(f, out.respond(rid))
    out.wait(len(frames))
    for rid, thr in zip(xs, thresholds):
        r, alone = out.by_id[rid], run_tail(net, xs[rid].unsqueeze(0), split, thr)[0]
        assert isinstance(r, codec.Reply) and (r.request_id, r.sent_ns, r.batch_size) == (rid, 1_000 + rid, 5)
        assert (r.exit_index, r.steering_bin) == (alone.exit_index, alone.steering_bin), f"threshold {thr}"
        assert (r.collision_prob, r.confidence, r.steering) == pytest.approx(
            (alone.collision_prob, alone.confidence, alone.steering), abs=1e-5)
    assert out.by_id[1].exit_index == split, "threshold 0: the first exit of the tail answers"
    assert out.by_id[2].exit_index == out.by_id[4].exit_index == net.num_exits - 1, "no early exit: the final one"


def test_a_row_whose_output_overflows_fails_alone(make_server):
    """An extreme but finite input overflows the network: that row gets NON_FINITE, its batch-mate its answer."""
    s = make_server(max_batch=2, max_wait_ms=LONG_WAIT_MS)
    huge = torch.full(s.shapes[1], 3e38)
    frames = {1: request(s, 1, x=huge), 2: request(s, 2)}
    out = Replies()
    for rid, f in frames.items():
        s.submit(f, out.respond(rid))
    out.wait(2)
    bad, good = out.by_id[1], out.by_id[2]
    assert isinstance(bad, codec.ErrorReply) and bad.code == codec.ErrorCode.NON_FINITE and bad.request_id == 1
    assert isinstance(good, codec.Reply) and good.batch_size == 2


# -- malformed frames ---------------------------------------------------------------------
def _flip(frame: bytes, at: int) -> bytes:
    b = bytearray(frame)
    b[at] ^= 0xFF
    return bytes(b)


MALFORMED = {
    "garbage": (lambda s: b"hello, cloud" * 10, codec.ErrorCode.BAD_MAGIC, None, "expected b'SPNN'"),
    "empty": (lambda s: b"", codec.ErrorCode.TRUNCATED, None, "shorter than"),
    "truncated": (lambda s: request(s, 7)[:-10], codec.ErrorCode.TRUNCATED, None, "declares"),
    "corrupted": (lambda s: _flip(request(s, 7), 200), codec.ErrorCode.CHECKSUM_MISMATCH, None, "CRC32"),
    "other model": (lambda s: codec.encode_request(activation(s, 1, 0), request_id=7, model_id="someone-else", split=1,
                                                   exit_threshold=1.0, dtype=codec.Dtype.F32),
                    codec.ErrorCode.WRONG_MODEL, 7, "someone-else"),
    "split not served": (lambda s: request(s, 7, split=7, x=torch.rand(s.model.split_shape(7))),
                         codec.ErrorCode.SPLIT_OUT_OF_RANGE, 7, "split 7 is not served"),
    "wrong shape": (lambda s: request(s, 7, split=1, x=activation(s, 2, 0)), codec.ErrorCode.SHAPE_MISMATCH, 7,
                    "at split 1"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_frames_are_answered_at_once_with_a_named_error(make_server, case):
    make_frame, code, rid, text = MALFORMED[case]
    logged = []
    s = make_server(log=logged.append)
    out = Replies()
    s.submit(make_frame(s), out.respond(0), drone="rogue")
    assert out.raw, "not answered before submit() returned"
    err = out.by_id[0]
    assert isinstance(err, codec.ErrorReply) and err.code == code and err.request_id == rid
    assert text in err.message
    assert s.stats.rejected == 1 and text in s.stats.last_error
    assert len(logged) == 1 and "rogue" in logged[0] and text in logged[0]
    assert s.queue_depth == 0 and (s.stats.batches, s.stats.served) == (0, 0), "it reached the worker"


# -- deadlines, overload, close -----------------------------------------------------------
def test_a_request_past_its_deadline_is_answered_with_an_error_not_computed(make_server):
    s = make_server(max_batch=2, max_wait_ms=LONG_WAIT_MS)
    long_ago = time.time_ns() - 10 * 10**9
    frames = {1: request(s, 1, sent_ns=long_ago, budget_ms=5.0), 2: request(s, 2, budget_ms=60_000.0)}
    out = Replies()
    for rid, f in frames.items():
        s.submit(f, out.respond(rid))
    out.wait(2)
    late, on_time = out.by_id[1], out.by_id[2]
    assert isinstance(late, codec.ErrorReply) and late.code == codec.ErrorCode.DEADLINE_EXCEEDED
    assert late.request_id == 1 and "past its deadline" in late.message
    assert isinstance(on_time, codec.Reply) and on_time.batch_size == 1, "the late row left the batch before compute"
    assert (s.stats.late, s.stats.served) == (1, 1)


def test_with_drop_late_off_a_late_request_is_still_computed(make_server):
    s = make_server(max_batch=1, drop_late=False)
    out = Replies()
    s.submit(request(s, 1, sent_ns=time.time_ns() - 10 * 10**9, budget_ms=5.0), out.respond(1))
    out.wait(1)
    assert isinstance(out.by_id[1], codec.Reply) and s.stats.late == 0


def test_a_full_queue_refuses_at_once_and_close_answers_everyone(make_server):
    """The worker holds a split-1 request while it waits for batch-mates; a split-3 request queues
    behind it (max_queue 1), so the next one overflows. close() then answers the queued one with
    'shutting down', the worker finishes its batch, and its thread ends."""
    before = tail_threads()
    s = make_server(max_batch=8, max_wait_ms=LONG_WAIT_MS, max_queue=1)
    assert len(tail_threads() - before) == 1
    out = Replies()
    s.submit(request(s, 1, split=1), out.respond(1))
    end = time.monotonic() + 5
    while s.queue_depth and time.monotonic() < end:     # until the worker took it and waits for more
        time.sleep(0.005)
    s.submit(request(s, 2, split=3), out.respond(2))
    assert s.queue_depth == 1 and not out.raw
    s.submit(request(s, 3, split=3), out.respond(3))
    refused = out.by_id[3]
    assert isinstance(refused, codec.ErrorReply) and refused.code == codec.ErrorCode.OVERLOADED
    assert refused.request_id == 3 and "queue full (1)" in refused.message and s.stats.overloaded == 1
    start = time.monotonic()
    s.close()
    assert time.monotonic() - start < LONG_WAIT_MS / 1e3 / 2, "close() waited out the batch wait"
    out.wait(3, timeout=2.0)                               # the refusal, the queued one, the held one
    queued = out.by_id[2]
    assert isinstance(queued, codec.ErrorReply) and queued.code == codec.ErrorCode.OVERLOADED
    assert queued.request_id == 2 and "shutting down" in queued.message
    assert isinstance(out.by_id[1], codec.Reply), "the batch the worker held is still computed"
    assert tail_threads() - before == set(), "the worker thread is still running"
    s.close()                                              # a second close is harmless


def test_a_request_after_close_is_answered(make_server):
    s = make_server()
    s.close()
    out = Replies()
    s.submit(request(s, 1), out.respond(1))
    out.wait(1, timeout=0.5)
    assert isinstance(out.by_id[1], codec.ErrorReply)
