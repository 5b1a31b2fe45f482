"""The cloud's compute: validate offload frames, batch them, run tails, answer.

Transport-agnostic (bytes in, a ``respond(bytes)`` callback out) so the ROS cloud
node and the ROS-free ``spinn cloud`` server share it. Requests from all drones go
into one queue; a worker takes the oldest request and, when another drone has sent
within the last second (``adaptive_wait``; a lone drone's frames come a camera period
apart, so waiting would only delay them), waits up to ``max_wait_ms`` for up to
``max_batch - 1`` more at the same split point, then runs what it has as one
batch (each row still leaves at its own exit, with its own threshold). Anything
malformed is answered with an error reply at once and never reaches the worker.
"""
from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from . import codec
from .model import EarlyExitNet
from .progressive import run_tail

Respond = Callable[[bytes], None]


@dataclass
class _Job:
    request: codec.Request
    respond: Respond
    drone: str
    arrived_ns: int            # this host's wall clock
    answered: bool = False     # a batch that fails part-way answers only the jobs it has not answered yet

    def answer(self, frame: bytes) -> None:
        self.answered = True
        self.respond(frame)


@dataclass
class ServerStats:
    served: int = 0
    rejected: int = 0          # malformed frames
    late: int = 0              # past their deadline before compute started
    overloaded: int = 0
    batches: int = 0
    recent_batch_sizes: collections.deque = field(default_factory=lambda: collections.deque(maxlen=50))
    recent_compute_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=50))
    last_error: str = ""


class TailServer:
    def __init__(self, model: EarlyExitNet, model_id: str, *, max_batch: int = 8, max_wait_ms: float = 4.0,
                 max_queue: int = 256, drop_late: bool = True, log: Callable[[str], None] | None = None,
                 adaptive_wait: bool = True):
        if max_batch < 1 or max_wait_ms < 0 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be >= 1 and max_wait_ms >= 0")
        self.model = model
        self.model_id = model_id
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1e3
        self.max_queue = max_queue
        self.drop_late = drop_late
        self.adaptive_wait = adaptive_wait
        self._last_seen: dict[str, float] = {}      # drone -> monotonic time of its latest request
        self.shapes = codec.split_shapes(model)
        self.stats = ServerStats()
        self._log = log or (lambda msg: None)
        self._queue: collections.deque[_Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._warm_up()
        self._worker = threading.Thread(target=self._work, name="spinn-tail", daemon=True)
        self._worker.start()

    def _warm_up(self) -> None:
        """Run every tail once at batch 1 and at ``max_batch``: torch's first call per shape
        allocates and is many times slower, and the first drones must not pay for it."""
        for split, shape in self.shapes.items():
            for batch in sorted({1, self.max_batch}):
                run_tail(self.model, torch.zeros(batch, *shape), split, 1.0)

    # -- intake (any thread) ----------------------------------------------------------
    def submit(self, frame: bytes, respond: Respond, drone: str = "", arrived_ns: int | None = None) -> None:
        arrived_ns = time.time_ns() if arrived_ns is None else arrived_ns
        try:
            req = codec.decode_request(frame, expected_model_id=self.model_id, expected_shapes=self.shapes)
        except codec.WireError as exc:
            self.stats.rejected += 1
            self.stats.last_error = str(exc)
            self._log(f"rejected a frame from {drone or '?'} ({len(frame)} bytes): {exc}")
            respond(codec.error_reply_for(exc))
            return
        with self._cond:
            if self._closed:                  # no worker will take it: answer now, not at the drone's timeout
                respond(codec.encode_error(codec.ErrorCode.OVERLOADED, "server shutting down", req.request_id))
                return
            if len(self._queue) >= self.max_queue:
                self.stats.overloaded += 1
                respond(codec.encode_error(codec.ErrorCode.OVERLOADED, f"queue full ({self.max_queue})",
                                           req.request_id))
                return
            self._queue.append(_Job(req, respond, drone, arrived_ns))
            self._last_seen[drone] = time.monotonic()
            self._cond.notify()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def load(self) -> dict:
        s = self.stats
        sizes, comp = list(s.recent_batch_sizes), list(s.recent_compute_ms)
        return {
            "queue_depth": self.queue_depth,
            "compute_ms": sum(comp) / len(comp) if comp else 0.0,
            "batch_size": sum(sizes) / len(sizes) if sizes else 0.0,
            "served": s.served, "rejected": s.rejected, "late": s.late, "overloaded": s.overloaded,
            "batches": s.batches, "model_id": self.model_id, "time_ns": time.time_ns(),
        }

    # -- batching worker ------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._run(batch)
            except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the server
                self._log(f"tail batch failed: {exc!r}")
                for job in batch:
                    if not job.answered:
                        job.answer(codec.encode_error(codec.ErrorCode.INTERNAL, repr(exc)[:200], job.request.request_id))

    def _next_batch(self) -> list[_Job] | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            first = self._queue.popleft()
            batch = [first]
            deadline = time.monotonic() + (self.max_wait_s if self._others_sending(first.drone) else 0.0)
            while len(batch) < self.max_batch:
                batch += self._take_same_split(first.request.split, self.max_batch - len(batch))
                remaining = deadline - time.monotonic()
                if len(batch) >= self.max_batch or remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            return batch

    def _others_sending(self, drone: str, window_s: float = 1.0) -> bool:
        """Is a batch worth waiting for: has another drone sent within ``window_s``? (lock held)"""
        if not self.adaptive_wait:
            return True
        now = time.monotonic()
        return any(d != drone and now - t <= window_s for d, t in self._last_seen.items())

    def _take_same_split(self, split: int, limit: int) -> list[_Job]:
        taken = [j for j in self._queue if j.request.split == split][:limit]
        for j in taken:
            self._queue.remove(j)
        return taken

    def _run(self, batch: list[_Job]) -> None:
        now = time.time_ns()
        if self.drop_late:
            batch = [j for j in batch if not self._late(j, now)]
            if not batch:
                return
        start = time.perf_counter()
        start_ns = time.time_ns()
        x = torch.stack([j.request.tensor for j in batch])
        thresholds = torch.tensor([j.request.exit_threshold for j in batch], dtype=torch.float64)
        decisions = run_tail(self.model, x, batch[0].request.split, thresholds)
        compute_ms = (time.perf_counter() - start) * 1e3
        share = compute_ms / len(batch)
        s = self.stats
        s.batches += 1
        s.served += len(batch)
        s.recent_batch_sizes.append(len(batch))
        s.recent_compute_ms.append(share)
        for job, d in zip(batch, decisions):
            if not all(math.isfinite(v) for v in (d.collision_prob, d.confidence, d.steering)):
                # finite but extreme inputs (e.g. 3e38) can overflow the network: that request's answer is an
                # error, its batch-mates' are not (found by bench/fuzz_codec.py)
                job.answer(codec.encode_error(codec.ErrorCode.NON_FINITE, "the tail's output is not finite (input "
                                              "values out of the model's range)", job.request.request_id))
                continue
            reply = codec.Reply(
                request_id=job.request.request_id, exit_index=d.exit_index,
                collision_prob=min(max(d.collision_prob, 0.0), 1.0), confidence=min(max(d.confidence, 0.0), 1.0),
                steering=min(max(d.steering, -1.0), 1.0), steering_bin=d.steering_bin, compute_ms=share,
                queue_ms=max(start_ns - job.arrived_ns, 0) / 1e6, batch_size=len(batch), sent_ns=job.request.sent_ns)
            job.answer(codec.encode_reply(reply))

    def _late(self, job: _Job, now_ns: int) -> bool:
        deadline = job.request.deadline_ns
        if deadline is None or now_ns <= deadline:
            return False
        self.stats.late += 1
        job.answer(codec.encode_error(codec.ErrorCode.DEADLINE_EXCEEDED,
                                       f"{(now_ns - deadline) / 1e6:.1f} ms past its deadline before compute",
                                       job.request.request_id))
        return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            pending, self._queue = list(self._queue), collections.deque()
            self._cond.notify_all()
        for job in pending:
            job.respond(codec.encode_error(codec.ErrorCode.OVERLOADED, "server shutting down", job.request.request_id))
        self._worker.join(timeout=5.0)
