"""The drone's per-frame engine: head, answers, offloads, replies, deadlines, fallbacks.

Transport- and ROS-free, like :mod:`~spinn_ros.core.tail_server` on the cloud side: the
drone node (``nodes/drone_node.py``) hands it camera frames (:meth:`DroneEngine.submit`,
never blocks), runs :meth:`DroneEngine.step` on its worker thread and publishes every
:class:`Answer` the engine emits. Tests drive it with a fake transport and a fake clock.

Per frame, under the :class:`~spinn_ros.core.plan.Plan` in force (read once per frame, so
no frame mixes plans), by the plan's mode (core/plan.py):

* provisional-first: the head runs stages ``[0, split)`` with its exits. A confident exit
  (or the final one) answers at once, *final*. Otherwise the deepest device exit answers
  at once, *provisional*, and the split activation goes to the cloud.
* offload-first: stages ``[0, split)`` run without exit heads and the activation leaves at once.
* race: as offload-first, then the drone computes its first exit's answer, *provisional*.

The cloud's answer, if it comes before the frame's deadline, is final (``CLOUD``); if not,
or on any failure, the provisional answer is emitted again as final (``DEVICE_FALLBACK``),
or, with none, the drone computes the tail itself. The deadline is enforced by the offload
tracker, not by the cloud. When no offload can leave (no cloud, or ``max_in_flight``
requests out already) the drone answers alone; with the in-flight cap full it answers from
its head, never by running the whole tail (the cap is full because the cloud is slow to
answer, and the drone must keep up with the camera).
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any, Callable, Protocol

import torch

from . import codec
from .codec import parse_encoding
from .device_emulation import SlowerDevice
from .encodings import DEFAULT_WIRE_ENCODING
from .frame_slot import LatestSlot
from .model import EarlyExitNet
from .offload import InFlight, OffloadTracker
from .plan import PLAIN_NETWORK, RACE, Plan
from .preprocess import UnsupportedImage
from .progressive import ExitDecision, HeadResult, first_exit_answer, run_head, run_stages, run_tail

#: an offload needs at least this much of its frame's budget left to have a chance
MIN_OFFLOAD_BUDGET_NS = 5_000_000


class Source(IntEnum):
    """Who answered; the values are ``InferenceResult.SOURCE_*``."""

    DEVICE = 0
    CLOUD = 1
    DEVICE_FALLBACK = 2


@dataclass(frozen=True)
class Settings:
    deadline_ms: float = 200.0     # latency budget per frame from its arrival
    late_grace_ms: float = 500.0   # a query stays open this long past its deadline (to count late replies)
    max_in_flight: int = 4
    encoding: str = DEFAULT_WIRE_ENCODING  # an encodings.WIRE_ENCODINGS name


@dataclass
class Frame:
    data: Any                      # the camera message (the node's; the engine only hands it to ``prepare``)
    seq: int
    arrived_ns: int                # on the engine's clock
    # on the engine's clock: arrived, taken by the worker, model input ready (core/step_times.py;
    # the node adds its own marks after these)
    marks: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Answer:
    """One answer for one frame: the node publishes it (and acts on it)."""

    frame: Frame
    decision: ExitDecision
    plan: Plan
    source: Source
    device_s: float
    provisional: bool = False
    network_ms: float = 0.0
    cloud_ms: float = 0.0
    queue_ms: float = 0.0
    wire_bytes: int = 0


class Transport(Protocol):
    """The drone's end of the link (``transport.zenoh_link.DroneLink``, or a fake)."""

    @property
    def cloud_available(self) -> bool: ...

    def request(self, frame: bytes, timeout_s: float, done: Callable[[bytes | None, str | None], None]) -> None:
        """Send; ``done(reply bytes | None, reason | None)`` exactly once, from any thread."""


@dataclass
class _Pending:
    """What finishing an offloaded frame needs, whichever way it ends."""

    plan: Plan
    provisional: ExitDecision | None
    activation: torch.Tensor
    device_s: float


@dataclass
class _DeviceTail:
    """Urgent worker job: finish a frame on the drone (its offload failed, no device exit)."""

    job: InFlight
    in_flight_ms: float = 0.0


class QueuedTransport:
    """Sends through a thread of its own: a Zenoh query blocks its caller while the link's
    queue is full (a dead or congested link), and that must stall offloading, never the head."""

    def __init__(self, inner, clock: Callable[[], int] = time.monotonic_ns):
        self.inner, self._clock = inner, clock
        self._sends: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="spinn-offload-send", daemon=True)
        self._thread.start()

    @property
    def cloud_available(self) -> bool:
        return self.inner.cloud_available

    def request(self, frame: bytes, timeout_s: float, done) -> None:
        self._sends.put((frame, self._clock() + int(timeout_s * 1e9), done))

    def _loop(self) -> None:
        while (item := self._sends.get()) is not None:
            frame, give_up_ns, done = item
            left_s = (give_up_ns - self._clock()) / 1e9
            if left_s <= 0:        # held up behind a blocked send: the device has answered
                done(None, "not sent: the link was blocked past the frame's deadline")
                continue
            self.inner.request(frame, left_s, done)

    def close(self) -> None:
        self._sends.put(None)
        self._thread.join(timeout=5.0)


class DroneEngine:
    def __init__(self, model: EarlyExitNet, model_id: str, plan: Plan, emit: Callable[[Answer], None], *,
                 prepare: Callable[[Any], torch.Tensor], transport: Transport | None = None,
                 settings: Settings = Settings(), device: SlowerDevice | None = None,
                 clock: Callable[[], int] = time.monotonic_ns, watchdog: bool = True,
                 no_reply_reason: str | None = None, warn: Callable[[str], None] = lambda _: None):
        """``prepare``: camera message -> model input (raises UnsupportedImage); ``emit``: every
        answer, from the worker or a transport thread; ``no_reply_reason``: the transport's reason
        for a silent refusal (counted apart from slow clouds)."""
        self.model, self.model_id = model, model_id
        self.check_plan(plan)
        self.plan, self.settings = plan, settings
        self._emit, self._prepare, self._clock, self._warn = emit, prepare, clock, warn
        self.transport = transport
        self.device = device or SlowerDevice(model, 1.0)
        self.no_reply_reason = no_reply_reason
        self.slot = LatestSlot()
        self.tracker = OffloadTracker(settings.max_in_flight, self._on_expired, clock=clock, watchdog=watchdog)
        self._answer_order = threading.Lock()   # a frame's provisional answer never follows its final one
        self.rejected = 0
        self.no_reply = 0            # offloads that ended with no reply at all, before their timeout
        self._seq = 0

    def check_plan(self, plan: Plan) -> None:
        n = self.model.num_stages
        if not 0 <= plan.split <= n:
            raise ValueError(f"split {plan.split} is invalid: must be in [0, {n}] for model '{self.model.spec.name}'")

    # -- camera path: never blocks ------------------------------------------------------------
    def submit(self, data) -> Frame:
        self._seq += 1
        now = self._clock()
        frame = Frame(data, self._seq, now, [now])
        self.slot.put(frame)
        return frame

    # -- the worker ---------------------------------------------------------------------------
    def step(self, timeout: float | None = 0.1) -> bool:
        """Process one waiting item (urgent device tails first); False when there was none."""
        item = self.slot.take(timeout=timeout)
        if isinstance(item, _DeviceTail):
            self._finish_tail_on_device(item.job.frame, item.job.context, item.job.wire_bytes, item.in_flight_ms)
        elif item is not None:
            self._process(item)
        return item is not None

    def expire_due(self) -> int:
        """Give up the offloads past their deadline now (the tracker's watchdog does it by itself)."""
        return self.tracker.expire_due()

    def _offload_room(self, plan: Plan) -> str:
        """'yes', or why not: 'never' (the plan keeps the frame on the drone), 'no cloud', 'full'."""
        if self.transport is None or not plan.offload or plan.split >= self.model.num_stages:
            return "never"
        if not self.transport.cloud_available:
            self.tracker.counters.skipped_no_cloud += 1
            return "no cloud"
        if not self.tracker.has_room():
            self.tracker.counters.skipped_full += 1
            return "full"
        return "yes"

    def _process(self, frame: Frame) -> None:
        frame.marks.append(self._clock())
        t0 = time.perf_counter()
        try:
            x = self._prepare(frame.data)
        except UnsupportedImage as exc:
            self.rejected += 1
            self._warn(f"rejected image (frame {frame.seq}): {exc}")
            return
        self.device.pad_to(self.device.preprocess_s, time.perf_counter() - t0)
        frame.marks.append(self._clock())
        plan = self.plan
        room = self._offload_room(plan)
        if room == "yes" and plan.sends_first:
            self._send_first(frame, x, plan)
            return
        # the cap is full: answer from the head (its exits run even for the plain network), since the
        # whole tail here would fall behind the camera
        threshold = min(plan.threshold, 1.0) if room == "full" else plan.threshold
        head = run_head(self.model, x, plan.split, threshold, offload=room == "yes")
        head.compute_s = self.device.pad(0, head.stages_run, head.compute_s, threshold == PLAIN_NETWORK)
        if head.final is not None:
            self._emit(Answer(frame, head.final, plan, Source.DEVICE, head.compute_s))
            return
        if head.provisional is not None:
            self._emit(Answer(frame, head.provisional, plan, Source.DEVICE, head.compute_s, provisional=True))
        self._offload(frame, plan, head)

    def _send_first(self, frame: Frame, x: torch.Tensor, plan: Plan) -> None:
        """offload-first and race: the request leaves before any exit head runs here."""
        first_exit_stage = self.model.exit_stages[0]
        keep = first_exit_stage if plan.mode == RACE and first_exit_stage < plan.split else None
        t0 = time.perf_counter()
        act, kept = run_stages(self.model, x, 0, plan.split, keep)
        compute_s = self.device.pad(0, plan.split, time.perf_counter() - t0, plain=True)
        job = self._offload(frame, plan, HeadResult(None, None, act, compute_s, plan.split))
        if plan.mode != RACE or job is None:
            return
        t0 = time.perf_counter()
        answer = first_exit_answer(self.model, act, plan.split, kept)
        idle_s = self.device.exit_s[0] + (0.0 if kept is not None else self.device.cost_s(plan.split, first_exit_stage + 1))
        job.context.device_s += self.device.pad_to(idle_s, time.perf_counter() - t0)
        with self._answer_order:
            if self.tracker.live(job.request_id):     # else the cloud (or the deadline) has answered already
                job.context.provisional = answer
                self._emit(Answer(frame, answer, plan, Source.DEVICE, job.context.device_s, provisional=True))

    # -- offloading -------------------------------------------------------------------------
    def _offload(self, frame: Frame, plan: Plan, head: HeadResult) -> InFlight | None:
        """Send the head's activation; the request's record, or None when it never left."""
        settings = self.settings
        deadline = frame.arrived_ns + int(settings.deadline_ms * 1e6)
        pending = _Pending(plan, head.provisional, head.activation, head.compute_s)
        if deadline - self._clock() < MIN_OFFLOAD_BUDGET_NS:
            self.tracker.counters.skipped_late += 1      # the head used up the budget: no reply could make it
            self._finish_locally(frame, pending)
            return None
        job = self.tracker.begin(frame, pending, deadline)
        if job is None:   # cannot happen with one worker (room was checked), but never lose a frame
            self._finish_locally(frame, pending)
            return None
        t0 = time.perf_counter()
        payload = self._request_bytes(job.request_id, plan, head.activation, settings,
                                      (deadline - self._clock()) / 1e9)
        self.device.pad_to(self.device.encode_s(settings.encoding, plan.split), time.perf_counter() - t0)
        job.wire_bytes = len(payload)
        remaining_s = (deadline - self._clock()) / 1e9
        self.transport.request(payload, remaining_s + settings.late_grace_ms / 1e3,
                               lambda reply, why, rid=job.request_id: self.on_reply(rid, reply, why))
        return job

    def _request_bytes(self, request_id: int, plan: Plan, act: torch.Tensor, settings: Settings,
                       remaining_s: float) -> bytes:
        dtype, compression = parse_encoding(settings.encoding)
        dtype, payload = codec.wire_payload(act, plan.split, dtype)
        return codec.encode_request(payload, request_id=request_id, model_id=self.model_id, split=plan.split,
                                    exit_threshold=plan.threshold, dtype=dtype, codec=compression,
                                    budget_ms=max(remaining_s, 0.0) * 1e3)

    def on_reply(self, request_id: int, payload: bytes | None, why: str | None) -> None:
        """From a transport thread: emit the refined answer, or fall back on the device."""
        reply = None
        if payload is not None:
            try:
                reply = codec.decode_reply(payload, num_exits=self.model.num_exits)
            except codec.WireError as exc:
                why = f"undecodable reply: {exc}"
            if isinstance(reply, codec.ErrorReply):
                why, reply = f"cloud error {getattr(reply.code, 'name', reply.code)}: {reply.message}", None
        with self._answer_order:
            job = self.tracker.finish(request_id, ok=reply is not None)
            if job is None:
                return      # late (already finished on the device) or unknown: discarded
            if reply is None:
                if why is not None and why == self.no_reply_reason:
                    self.no_reply += 1      # silent: denied, oversized or nobody serving the key (not a slow cloud)
                self._warn(f"offload of frame {job.frame.seq} failed: {why}")
                self._finish_on_device(job)
                return
            rtt_ms = (self._clock() - job.sent_ns) / 1e6
            decision = ExitDecision(reply.exit_index, reply.collision_prob, reply.confidence, reply.steering,
                                    reply.steering_bin)
            ctx: _Pending = job.context
            self._emit(Answer(job.frame, decision, ctx.plan, Source.CLOUD, ctx.device_s,
                              network_ms=max(rtt_ms - reply.compute_ms - reply.queue_ms, 0.0),
                              cloud_ms=reply.compute_ms, queue_ms=reply.queue_ms, wire_bytes=job.wire_bytes))

    def _on_expired(self, job: InFlight) -> None:
        # how long it was out is a lower bound on its round trip: the monitor learns from it
        with self._answer_order:
            self._finish_on_device(job, in_flight_ms=(self._clock() - job.sent_ns) / 1e6)

    def _finish_on_device(self, job: InFlight, in_flight_ms: float = 0.0) -> None:
        """The frame's answer is the device's: the provisional one, or (none) compute the tail here."""
        ctx: _Pending = job.context
        if ctx.provisional is not None:
            self._emit(Answer(job.frame, ctx.provisional, ctx.plan, Source.DEVICE_FALLBACK, ctx.device_s,
                              wire_bytes=job.wire_bytes, network_ms=in_flight_ms))
        else:
            self.slot.put_urgent(_DeviceTail(job, in_flight_ms))

    def _finish_locally(self, frame: Frame, ctx: _Pending) -> None:
        """Never offloaded after all: the deepest device exit answers, or the tail runs here."""
        if ctx.provisional is not None:
            self._emit(Answer(frame, ctx.provisional, ctx.plan, Source.DEVICE_FALLBACK, ctx.device_s))
        else:
            self._finish_tail_on_device(frame, ctx)

    def _finish_tail_on_device(self, frame: Frame, ctx: _Pending, wire_bytes: int = 0,
                               in_flight_ms: float = 0.0) -> None:
        t0 = time.perf_counter()
        plan = ctx.plan
        decision = run_tail(self.model, ctx.activation, plan.split, plan.threshold)[0]
        stop = self.model.exit_stages[decision.exit_index] + 1
        tail_s = self.device.pad(plan.split, stop, time.perf_counter() - t0, plan.plain)
        self._emit(Answer(frame, decision, plan, Source.DEVICE_FALLBACK, ctx.device_s + tail_s,
                          wire_bytes=wire_bytes, network_ms=in_flight_ms))

    def reconfigure(self, **changes) -> None:
        """New deadline, grace or encoding (taking effect from the next offload)."""
        self.settings = replace(self.settings, **changes)

    def close(self) -> None:
        self.slot.close()
        self.tracker.close()
