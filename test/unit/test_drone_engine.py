"""The drone engine (core/drone_engine.py) on its own: a fake transport and a fake clock,
so every path of a frame (final, provisional, offload, reply, expiry, fallback) is checked
in milliseconds and exactly, with no ROS, no Zenoh and no timing on a loaded machine."""
from __future__ import annotations

import pytest
import torch

from spinn_ros.core import codec
from spinn_ros.core.drone_engine import DroneEngine, Settings, Source
from spinn_ros.core.model_ref import load_model
from spinn_ros.core.plan import OFFLOAD_FIRST, RACE, Plan
from spinn_ros.core.preprocess import UnsupportedImage
from spinn_ros.core.progressive import PLAIN_NETWORK, reference_decision, run_tail

MODEL = "random:small:0"
SPLIT = 3                   # device exits 0..2 before it, the rest in the cloud
ALWAYS_OFFLOAD = 1.0        # no softmax of an untrained model reaches it: only the final exit answers
DEADLINE_MS = 200.0


class FakeClock:
    def __init__(self):
        self.ns = 1_000_000_000

    def __call__(self) -> int:
        return self.ns

    def advance_ms(self, ms: float) -> None:
        self.ns += int(ms * 1e6)


class FakeCloud:
    """The transport: keeps each request until the test answers it, with the real tail."""

    def __init__(self, model, model_id):
        self.model, self.model_id = model, model_id
        self.cloud_available = True
        self.requests: list[tuple[bytes, float, object]] = []

    def request(self, frame: bytes, timeout_s: float, done) -> None:
        self.requests.append((frame, timeout_s, done))

    def decoded(self, i: int) -> codec.Request:
        return codec.decode_request(self.requests[i][0], expected_model_id=self.model_id,
                                    expected_shapes=codec.split_shapes(self.model))

    def answer(self, i: int) -> None:
        req = self.decoded(i)
        d = run_tail(self.model, req.tensor[None], req.split, req.exit_threshold)[0]
        reply = codec.Reply(request_id=req.request_id, exit_index=d.exit_index, collision_prob=d.collision_prob,
                            confidence=d.confidence, steering=d.steering, steering_bin=d.steering_bin,
                            compute_ms=1.0, queue_ms=0.5, batch_size=1)
        self.requests[i][2](codec.encode_reply(reply), None)

    def fail(self, i: int, why: str) -> None:
        self.requests[i][2](None, why)


@pytest.fixture(scope="module")
def model():
    return load_model(MODEL)


@pytest.fixture
def rig(model):
    net, model_id = model
    clock, cloud, answers = FakeClock(), FakeCloud(net, model_id), []

    def make(plan: Plan, **settings) -> DroneEngine:
        return DroneEngine(net, model_id, plan, answers.append, prepare=_prepare, transport=cloud, clock=clock,
                           watchdog=False, settings=Settings(**{"deadline_ms": DEADLINE_MS, **settings}),
                           no_reply_reason="nobody there")

    return make, clock, cloud, answers


def _prepare(x):
    if x is None:
        raise UnsupportedImage("no pixels")
    return x


def frames(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, 128, 128, generator=g) for _ in range(n)]


def run_frame(engine: DroneEngine, x) -> None:
    engine.submit(x)
    assert engine.step(timeout=0)


def test_confident_device_exit_is_final_and_sends_nothing(rig, model):
    make, _, cloud, answers = rig
    (x,) = frames(1)
    engine = make(Plan(SPLIT, 0.0))            # the first exit is always confident enough
    run_frame(engine, x)
    assert [(a.source, a.provisional) for a in answers] == [(Source.DEVICE, False)]
    assert answers[0].decision == reference_decision(model[0], x, 0.0) and not cloud.requests


def test_offload_answers_provisionally_then_the_cloud_refines(rig, model):
    make, clock, cloud, answers = rig
    (x,) = frames(1)
    engine = make(Plan(SPLIT, ALWAYS_OFFLOAD, plan_id=7))
    run_frame(engine, x)
    assert [(a.source, a.provisional) for a in answers] == [(Source.DEVICE, True)], "provisional, before any reply"
    assert answers[0].decision.exit_index == SPLIT - 1, "the deepest device exit answers provisionally"
    req = cloud.decoded(0)
    assert (req.split, req.exit_threshold) == (SPLIT, ALWAYS_OFFLOAD)
    clock.advance_ms(30)
    cloud.answer(0)
    final = answers[-1]
    assert (final.source, final.provisional, final.plan.plan_id) == (Source.CLOUD, False, 7)
    assert final.decision.exit_index == reference_decision(model[0], x, ALWAYS_OFFLOAD).exit_index
    assert final.wire_bytes == len(cloud.requests[0][0]) and final.network_ms == pytest.approx(30 - 1.5)
    assert engine.tracker.counters.replied == 1 and engine.expire_due() == 0


def test_expired_offload_falls_back_to_the_provisional_answer_and_a_late_reply_is_dropped(rig):
    make, clock, cloud, answers = rig
    (x,) = frames(1)
    engine = make(Plan(SPLIT, ALWAYS_OFFLOAD))
    run_frame(engine, x)
    clock.advance_ms(DEADLINE_MS - 1)
    assert engine.expire_due() == 0, "not before its deadline"
    clock.advance_ms(2)
    assert engine.expire_due() == 1
    fallback = answers[-1]
    assert (fallback.source, fallback.provisional) == (Source.DEVICE_FALLBACK, False)
    assert fallback.decision == answers[0].decision and fallback.network_ms == pytest.approx(DEADLINE_MS + 1)
    cloud.answer(0)
    assert len(answers) == 2 and engine.tracker.counters.late == 1, "one final answer per frame"


def test_failed_raw_frame_offload_runs_the_tail_on_the_drone(rig, model):
    make, _, cloud, answers = rig
    (x,) = frames(1)
    engine = make(Plan(0, PLAIN_NETWORK))
    run_frame(engine, x)
    assert not answers, "no device exit before split 0: nothing to answer provisionally"
    assert cloud.decoded(0).dtype == codec.Dtype.FRAME
    cloud.fail(0, "nobody there")
    assert not answers and engine.no_reply == 1
    assert engine.step(timeout=0), "the device tail is urgent worker work"
    (a,) = answers
    assert (a.source, a.provisional) == (Source.DEVICE_FALLBACK, False)
    assert a.decision.exit_index == model[0].num_exits - 1, "the plain network answers at the final exit"
    # the frame went through u8 pixels on the wire; the device tail runs on the float tensor
    assert a.decision.collision_prob == pytest.approx(reference_decision(model[0], x, PLAIN_NETWORK).collision_prob)


def test_full_in_flight_cap_and_no_cloud_answer_on_the_device(rig):
    make, _, cloud, answers = rig
    x1, x2, x3 = frames(3)
    engine = make(Plan(SPLIT, ALWAYS_OFFLOAD), max_in_flight=1)
    run_frame(engine, x1)
    run_frame(engine, x2)
    assert len(cloud.requests) == 1 and engine.tracker.counters.skipped_full == 1
    assert [(a.source, a.provisional) for a in answers[1:]] == [(Source.DEVICE, False)]
    cloud.cloud_available = False
    cloud.answer(0)
    run_frame(engine, x3)
    assert len(cloud.requests) == 1 and engine.tracker.counters.skipped_no_cloud == 1
    assert (answers[-1].source, answers[-1].provisional) == (Source.DEVICE, False)


def test_a_head_past_the_budget_does_not_offload(rig):
    make, _, cloud, answers = rig
    (x,) = frames(1)
    engine = make(Plan(SPLIT, ALWAYS_OFFLOAD), deadline_ms=1.0)    # less than MIN_OFFLOAD_BUDGET_NS
    run_frame(engine, x)
    assert not cloud.requests and engine.tracker.counters.skipped_late == 1
    assert [(a.source, a.provisional) for a in answers] == [(Source.DEVICE, True), (Source.DEVICE_FALLBACK, False)]


def test_a_new_plan_applies_from_the_next_frame_and_bad_frames_are_rejected(rig):
    make, _, cloud, answers = rig
    x1, x2 = frames(2)
    engine = make(Plan(SPLIT, ALWAYS_OFFLOAD, plan_id=1))
    run_frame(engine, x1)
    engine.plan = Plan(model_stages := engine.model.num_stages, ALWAYS_OFFLOAD, plan_id=2)
    run_frame(engine, x2)
    assert answers[-1].plan.plan_id == 2 and answers[-1].plan.split == model_stages and len(cloud.requests) == 1
    run_frame(engine, None)
    assert engine.rejected == 1 and len(answers) == 2
    with pytest.raises(ValueError, match="split 9 is invalid"):
        engine.check_plan(Plan(9, 0.5))


def test_offload_first_sends_before_any_exit_head_and_the_cloud_answers(rig, model):
    make, _, cloud, answers = rig
    (x,) = frames(1)
    engine = make(Plan(SPLIT, ALWAYS_OFFLOAD, OFFLOAD_FIRST))
    run_frame(engine, x)
    assert not answers, "no device answer: the request left first and no exit head ran"
    assert cloud.decoded(0).split == SPLIT
    cloud.answer(0)
    (a,) = answers
    assert (a.source, a.provisional) == (Source.CLOUD, False)
    assert a.decision.exit_index == reference_decision(model[0], x, ALWAYS_OFFLOAD).exit_index


@pytest.mark.parametrize("split", [0, SPLIT])
def test_race_answers_from_the_first_exit_after_sending_and_the_cloud_refines(rig, model, split):
    make, clock, cloud, answers = rig
    (x,) = frames(1)
    engine = make(Plan(split, PLAIN_NETWORK, RACE))
    run_frame(engine, x)
    assert len(cloud.requests) == 1
    (prov,) = answers
    assert (prov.source, prov.provisional, prov.decision.exit_index) == (Source.DEVICE, True, 0)
    assert prov.decision == reference_decision(model[0], x, 0.0), "the first exit's answer, whatever the threshold"
    cloud.answer(0)
    assert (answers[-1].source, answers[-1].decision.exit_index) == (Source.CLOUD, model[0].num_exits - 1)
    run_frame(engine, x)                  # the second frame's offload expires: its provisional answer stands
    clock.advance_ms(DEADLINE_MS + 1)
    assert engine.expire_due() == 1
    assert [(a.source, a.provisional) for a in answers[2:]] == [(Source.DEVICE, True), (Source.DEVICE_FALLBACK, False)]


def test_race_reply_before_the_device_answer_leaves_no_provisional_after_the_final(rig):
    make, _, cloud, answers = rig
    (x,) = frames(1)
    engine = make(Plan(SPLIT, ALWAYS_OFFLOAD, RACE))
    cloud.request = lambda frame, timeout_s, done: (cloud.requests.append((frame, timeout_s, done)),
                                                    cloud.answer(len(cloud.requests) - 1))
    run_frame(engine, x)
    assert [(a.source, a.provisional) for a in answers] == [(Source.CLOUD, False)]


def test_a_full_in_flight_cap_answers_from_the_head_not_the_whole_plain_network(rig, model):
    make, _, cloud, answers = rig
    x1, x2 = frames(2)
    engine = make(Plan(0, PLAIN_NETWORK, OFFLOAD_FIRST), max_in_flight=1)
    run_frame(engine, x1)
    run_frame(engine, x2)
    assert engine.tracker.counters.skipped_full == 1
    (a,) = answers
    assert (a.source, a.provisional, a.decision.exit_index) == (Source.DEVICE, False, 0)
    assert a.plan.threshold == PLAIN_NETWORK, "the answer names the plan in force"


def test_a_frame_carries_the_engines_marks_arrived_taken_and_input_ready(rig):
    """core/step_times.py's first marks, on the engine's clock: the node adds its own after them."""
    make, clock, _, answers = rig
    (x,) = frames(1)
    engine = make(Plan(SPLIT, 0.0))
    frame = engine.submit(x)
    clock.advance_ms(7)                        # waited in the slot
    assert engine.step(timeout=0)
    assert frame.marks == [frame.arrived_ns, frame.arrived_ns + 7_000_000, frame.arrived_ns + 7_000_000]
    assert answers[0].frame is frame
