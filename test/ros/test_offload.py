"""Synergistic offload across real processes: camera publisher (this test) -> drone
node(s) -> cloud over real Zenoh sessions -> refined results back over DDS."""
from __future__ import annotations

import sys
import threading
import time

import pytest

from spinn_ros.core import codec
from spinn_ros.core.model_ref import load_model
from spinn_ros.core.preprocess import to_model_input
from spinn_ros.core.progressive import reference_decision
from spinn_ros.msg import InferenceResult, SplitPlan
from spinn_ros.ros import qos
from spinn_ros.testing.frames import synthetic_frames
from spinn_ros.tools import launch_spec
from spinn_ros.tools.ports import free_port
from spinn_ros.tools.waiting import wait_until
from spinn_ros.transport.zenoh_link import DroneLink

from helpers import DroneIO, FrameAccounting, diagnostics_value, drone_settings, image_msg

MODEL = "random:small:0"
SPLIT = 3                 # two device exits before it, four in the cloud
DEADLINE_MS = 400.0
SLACK_MS = 100.0          # DDS both ways + thread wake-ups on a loaded 2-core machine


def endpoint(port: int) -> str:
    return f"tls/127.0.0.1:{port}"      # secured (mutual TLS, access control): certificates from conftest.certs


def drone(ns: str, port: int, **overrides) -> launch_spec.NodeSpec:
    params = {"checkpoint": MODEL, "split_point": SPLIT, "exit_threshold": 1.0, "cloud.enabled": True,
              "cloud.deadline_ms": DEADLINE_MS, "cloud.encoding": "f32-lz4", "zenoh.connect": endpoint(port),
              "follow_plans": False, "diagnostics_period_s": 0.25, **overrides}
    return launch_spec.drone(namespace=ns, camera_topic=f"/{ns}/camera", overrides=params)[0]


def cloud_node(port: int, **overrides) -> launch_spec.NodeSpec:
    params = {"checkpoint": MODEL, "zenoh.listen": endpoint(port), "diagnostics_period_s": 0.25,
              "zenoh.allowed_drones": "d1,d2,fuzzer", **overrides}
    return launch_spec.cloud(overrides=params)[0]


def cloud_server_argv(port: int) -> list[str]:
    """The ROS-free cloud (same service class), so a SIGKILL leaves no DDS state behind."""
    return [sys.executable, "-m", "spinn_ros.tools.cli", "cloud", "--checkpoint", MODEL, "--listen", endpoint(port),
            "--allow-drone", "d1", "--stats-period", "0"]


def wait_cloud_used(io: DroneIO, start_sec: int, timeout: float = 30.0) -> FrameAccounting:
    """Send frames until one comes back answered by the cloud (the drone saw the cloud's token);
    returns the frame accounting from then on."""
    frame = synthetic_frames(1, seed=7)[0]
    sec = start_sec
    deadline = time.monotonic() + timeout
    while not any(r.source == InferenceResult.SOURCE_CLOUD for r in io.results.msgs):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{io.ns}: no cloud-answered result within {timeout} s")
        io.pub.publish(image_msg(frame, "rgb8", sec))
        sec += 1
        time.sleep(0.2)
    time.sleep(DEADLINE_MS / 1e3)
    io.results.msgs.clear()
    return FrameAccounting(f"/{io.ns}/spinn_drone", io.diags)


def test_offloaded_frames_come_back_refined_and_match_pytorch(ros):
    port = free_port()
    ros.start(cloud_node(port))
    ros.start(drone("d1", port))
    io = DroneIO(ros, "/d1/camera", "d1")
    accounting = wait_cloud_used(io, start_sec=1)

    model, _ = load_model(MODEL)
    frames = synthetic_frames(20, seed=11)
    sent_at = {}
    for i, f in enumerate(frames):
        sent_at[100 + i] = time.monotonic()
        io.pub.publish(image_msg(f, "rgb8", 100 + i))
        time.sleep(0.1)
    wait_until(lambda: 100 + len(frames) - 1 in io.finals(100), 20, "the last frame's final result")
    finals = io.finals(100)
    accounting.check(len(finals), len(frames))
    provisional = {r.header.stamp.sec for r in io.results.msgs if r.provisional}
    for sec, r in finals.items():
        ref = reference_decision(model, to_model_input(frames[sec - 100], 128), 1.0)
        assert r.source == InferenceResult.SOURCE_CLOUD, f"frame {sec} answered by source {r.source}"
        assert sec in provisional, "a provisional device answer precedes every offloaded frame"
        assert r.exit_index == ref.exit_index == model.num_exits - 1
        assert r.collision_probability == pytest.approx(ref.collision_prob, abs=1e-5)  # f32 on the wire: exact
        assert r.steering == pytest.approx(ref.steering, abs=1e-5)
        assert r.split_point == SPLIT and r.offload_bytes > 0 and r.cloud_compute_ms > 0
        took_ms = (io.results.arrived[id(r)] - sent_at[sec]) * 1e3
        assert took_ms <= DEADLINE_MS + SLACK_MS, f"frame {sec} final after {took_ms:.0f} ms"


def test_cloud_crash_and_restart(ros):
    """Kill the cloud mid-stream: every frame still gets a final result by its deadline and
    offloading stops; restart it: offloading resumes within 3 s, the drone untouched."""
    port = free_port()
    cloud = ros.start_command("cloud", cloud_server_argv(port))
    ros.start(drone("d1", port))
    io = DroneIO(ros, "/d1/camera", "d1")
    accounting = wait_cloud_used(io, start_sec=1)

    frames = synthetic_frames(10, seed=3)
    sec = 100
    sent_at: dict[int, float] = {}

    def send(n: int, period: float = 0.1) -> None:
        nonlocal sec
        for _ in range(n):
            io.pub.publish(image_msg(frames[sec % len(frames)], "rgb8", sec))
            sent_at[sec] = time.monotonic()
            sec += 1
            time.sleep(period)

    send(15)
    cloud.kill()
    killed_sec = sec
    send(30)                       # 3 s without a cloud
    restart_sec = sec
    cloud = ros.start_command("cloud", cloud_server_argv(port))
    wait_until(lambda: any("serving model" in line for line in cloud.lines), 60, "the cloud to come back")
    back_at = time.monotonic()
    back_sec = sec
    send(50)
    wait_until(lambda: sec - 1 in io.finals(100), 10, "the last frame's final result")
    time.sleep(DEADLINE_MS / 1e3)
    finals = io.finals(100)
    accounting.check(len(finals), sec - 100)
    took_ms = {s: (io.results.arrived[id(r)] - sent_at[s]) * 1e3 for s, r in finals.items()}
    late = {s: (round(ms), finals[s].source) for s, ms in took_ms.items() if ms > DEADLINE_MS + SLACK_MS}
    assert not late, f"finals after the deadline: {late}"
    before = [finals[s].source for s in range(100, killed_sec) if s in finals]
    assert before.count(InferenceResult.SOURCE_CLOUD) >= len(before) - 2, "offloading before the crash"
    outage = [finals[s].source for s in range(killed_sec + 5, restart_sec) if s in finals]
    assert all(src != InferenceResult.SOURCE_CLOUD for src in outage), "no cloud answers while it is down"
    # once the drone has seen the token vanish it must stop offloading: a device answer without a provisional
    provisional = {r.header.stamp.sec for r in io.results.msgs if r.provisional}
    offloaded_in_outage = [s for s in range(killed_sec + 5, restart_sec) if s in provisional]
    assert not offloaded_in_outage, f"queries into the void during the outage: {offloaded_in_outage}"
    resumed = [s for s in range(back_sec, sec) if s in finals and finals[s].source == InferenceResult.SOURCE_CLOUD]
    assert resumed, "offloading never resumed"
    assert sent_at[resumed[0]] - back_at < 3.0, f"resumed {sent_at[resumed[0]] - back_at:.1f} s after restart"


def test_two_drones_share_one_batching_cloud(ros):
    port = free_port()
    ros.start(cloud_node(port, max_batch=8, max_wait_ms=30.0))
    for ns in ("d1", "d2"):
        ros.start(drone(ns, port))
    ios = [DroneIO(ros, f"/{ns}/camera", ns) for ns in ("d1", "d2")]
    accounting = {io.ns: wait_cloud_used(io, start_sec=1) for io in ios}

    model, _ = load_model(MODEL)
    frames = {"d1": synthetic_frames(12, seed=21), "d2": synthetic_frames(12, seed=22)}
    base = {"d1": 1000, "d2": 2000}
    for i in range(12):
        for io in ios:      # both drones' frames arrive together: the cloud can batch them
            io.pub.publish(image_msg(frames[io.ns][i], "rgb8", base[io.ns] + i))
        time.sleep(0.15)
    for io in ios:
        wait_until(lambda io=io: base[io.ns] + 11 in io.finals(base[io.ns]), 20, f"{io.ns}'s last result")
    for io in ios:
        finals = io.finals(base[io.ns])
        accounting[io.ns].check(len(finals), 12)
        assert set(finals) <= set(range(base[io.ns], base[io.ns] + 12)), f"{io.ns} got another drone's frames"
        for sec, r in finals.items():
            ref = reference_decision(model, to_model_input(frames[io.ns][sec - base[io.ns]], 128), 1.0)
            assert r.source == InferenceResult.SOURCE_CLOUD
            assert r.collision_probability == pytest.approx(ref.collision_prob, abs=1e-5), "answer for this frame"

    def mean_batch():
        v = diagnostics_value(ios[0].diags.msgs, "batch_size", "/spinn_cloud")
        return float(v) if v is not None else 0.0

    wait_until(lambda: mean_batch() > 1.0, 5, "batches of more than one request in the cloud's diagnostics")


def test_cloud_survives_malformed_frames(ros, certs):
    port = free_port()
    cloud = ros.start(cloud_node(port))
    link = DroneLink(drone_settings(certs, "fuzzer", endpoint(port)), "fuzzer")
    try:
        wait_until(lambda: link.cloud_available, 30, "the cloud's liveliness token")
        model, model_id = load_model(MODEL)
        good = codec.encode_request(to_model_input(synthetic_frames(1, seed=1)[0], 128)[0], request_id=7,
                                    model_id=model_id, split=0, exit_threshold=1.0, dtype=codec.Dtype.F32)
        import numpy as np

        rng = np.random.default_rng(0)
        frames = []
        for i in range(2000):
            kind = i % 4
            if kind == 0:
                frames.append(rng.integers(0, 256, rng.integers(0, 300), dtype=np.uint8).tobytes())
            elif kind == 1:
                frames.append(good[: rng.integers(0, len(good))])
            else:
                b = bytearray(good)
                for _ in range(rng.integers(1, 8)):
                    b[rng.integers(0, len(b))] ^= 1 << int(rng.integers(0, 8))
                frames.append(bytes(b))
        answers: list = []
        window = threading.BoundedSemaphore(32)     # a bounded stream, as drones send (cloud.max_in_flight)

        def answered(payload, why):
            answers.append((payload, why))
            window.release()

        for f in frames:
            assert window.acquire(timeout=10.0), "the cloud stopped answering"
            link.request(f, 5.0, answered)
        wait_until(lambda: len(answers) >= len(frames), 60, f"{len(frames)} answers")
        kinds = [type(codec.decode_reply(p)).__name__ if p is not None else why for p, why in answers]
        assert kinds.count("ErrorReply") == len(frames), f"every malformed frame gets an error reply: {set(kinds)}"
        ok: list = []
        link.request(good, 5.0, lambda payload, why: ok.append(payload))
        wait_until(lambda: ok, 10, "a reply to a valid frame after the fuzzing")
        reply = codec.decode_reply(ok[0])
        assert isinstance(reply, codec.Reply) and reply.request_id == 7
        assert cloud.poll() is None
    finally:
        link.close()


def test_a_race_plan_from_the_topic_answers_from_the_first_exit_then_the_cloud(ros):
    """The plan's mode travels in SplitPlan.mode: under a race the drone sends every frame first and
    answers provisionally from its first exit; a plan with an unknown mode is refused."""
    port = free_port()
    ros.start(cloud_node(port))
    ros.start(drone("d1", port, follow_plans=True))
    io = DroneIO(ros, "/d1/camera", "d1")
    wait_cloud_used(io, start_sec=1)
    plans = ros.node.create_publisher(SplitPlan, "/d1/spinn/plan", qos.LATCHED)
    ros.wait_matched(plans)
    plans.publish(SplitPlan(plan_id=5, split_point=SPLIT, exit_threshold=1.0, mode="race", offload=True))
    frame = synthetic_frames(1, seed=3)[0]
    wait_until(lambda: (io.pub.publish(image_msg(frame, "rgb8", 50)), time.sleep(0.2),
                        any(r.plan_id == 5 for r in io.results.msgs))[-1], 20, "the race plan in force")
    # one at a time: the latched topic keeps only the newest plan
    plans.publish(SplitPlan(plan_id=6, split_point=SPLIT, exit_threshold=1.0, mode="bogus", offload=True))
    time.sleep(1.0)
    frames = synthetic_frames(8, seed=12)
    for i, f in enumerate(frames):
        io.pub.publish(image_msg(f, "rgb8", 200 + i))
        time.sleep(0.15)
    wait_until(lambda: 200 + len(frames) - 1 in io.finals(200), 20, "the last frame's final result")
    finals = io.finals(200)
    provisional = {r.header.stamp.sec: r for r in io.results.msgs if r.provisional and r.header.stamp.sec >= 200}
    assert len(finals) == len(frames) and all(r.plan_id == 5 for r in finals.values()), "plan 6 was refused"
    for sec, r in finals.items():
        assert r.source == InferenceResult.SOURCE_CLOUD and r.split_point == SPLIT, f"frame {sec}: source {r.source}"
        assert provisional[sec].exit_index == 0, "the race's provisional answer is the first exit's"
