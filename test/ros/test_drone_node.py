"""The drone node as a separate process, driven over real DDS from this test process."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from geometry_msgs.msg import TwistStamped
from rclpy.parameter_client import AsyncParameterClient

from spinn_ros.core.model_ref import load_model
from spinn_ros.core.preprocess import to_model_input
from spinn_ros.core.progressive import reference_decision
from spinn_ros.msg import InferenceResult
from spinn_ros.ros import qos
from spinn_ros.testing.frames import synthetic_frames
from spinn_ros.tools import launch_spec
from spinn_ros.tools.waiting import wait_until

from helpers import (
    Collector,
    DroneIO,
    FrameAccounting,
    as_encoding,
    diagnostics_value,
    image_msg,
    node_accounting,
    parameter_setter,
)

CAMERA = "/test/camera"
MODEL = "random:small:0"


def drone_spec(**overrides) -> launch_spec.NodeSpec:
    return launch_spec.drone(camera_topic=CAMERA, overrides={"checkpoint": MODEL, **overrides})[0]


def threshold_splitting_exits(model, frames, encodings) -> float:
    """A threshold at which about half the frames leave at the first exit, so the test
    exercises both early and late exits even with an untrained model."""
    first = []
    with torch.inference_mode():
        for f, e in zip(frames, encodings):
            raw = model(to_model_input(f, model.spec.input_size, e))[0]
            first.append(float(raw[:, :2].softmax(1).max()))
    return float(np.median(first))


def test_every_frame_gets_one_result_matching_pytorch(ros):
    model, _ = load_model(MODEL)
    encodings = ["rgb8", "bgr8", "mono8"] * 10
    rgb = synthetic_frames(len(encodings), seed=1) + []
    rgb[-1] = synthetic_frames(1, seed=9, size=(120, 160))[0]        # non-square: resized by the node
    frames = [as_encoding(f, e) for f, e in zip(rgb, encodings)]
    threshold = threshold_splitting_exits(model, frames, encodings)

    ros.start(drone_spec(exit_threshold=threshold, diagnostics_period_s=0.25))
    cmds = Collector(ros.node, TwistStamped, "/cmd_vel", qos.RESULTS)
    io = DroneIO(ros, CAMERA)
    ros.wait_matched(cmds.sub)
    io.prime()
    results, diags, pub = io.results, io.diags, io.pub
    cmds.msgs.clear()
    accounting = FrameAccounting("/spinn_drone", diags)

    for i, (f, e) in enumerate(zip(frames, encodings)):
        pub.publish(image_msg(f, e, stamp_s=1000 + i))
        time.sleep(1 / 10)
    wait_until(lambda: any(m.header.stamp.sec == 1000 + len(frames) - 1 for m in results.msgs), 30, "the last result")
    time.sleep(0.3)  # a duplicate would arrive within this

    stamps = [m.header.stamp.sec for m in results.msgs]
    assert len(set(stamps)) == len(stamps), "no frame answered twice"
    assert set(stamps) <= set(range(1000, 1000 + len(frames)))
    accounting.check(finals=len(stamps), sent=len(frames))
    exits_seen = set()
    for m in results.msgs:
        i = m.header.stamp.sec - 1000
        ref = reference_decision(model, to_model_input(frames[i], model.spec.input_size, encodings[i]), threshold)
        assert not m.provisional and m.source == InferenceResult.SOURCE_DEVICE
        assert m.exit_index == ref.exit_index, f"frame {i}: exit {m.exit_index} != reference {ref.exit_index}"
        assert m.collision_probability == pytest.approx(ref.collision_prob, abs=1e-5)
        assert m.steering == pytest.approx(ref.steering, abs=1e-5)
        assert m.confidence == pytest.approx(ref.confidence, abs=1e-5)
        assert m.header.frame_id == "camera" and m.num_exits == model.num_exits
        assert m.split_point == model.num_stages and m.device_compute_ms > 0
        exits_seen.add(m.exit_index)
    assert len(exits_seen) >= 2, "the threshold should make frames leave at different exits"
    wait_until(lambda: len(cmds.msgs) >= len(stamps), 5, "one command per result")
    frame_cmds = [c for c in cmds.msgs if 1000 <= c.header.stamp.sec < 1000 + len(frames)]
    assert sorted(c.header.stamp.sec for c in frame_cmds) == sorted(stamps), "one command per frame, image-stamped"
    # where the frames' time went inside the node (core/step_times.py), in /diagnostics: every step, each
    # non-negative, and the whole span from the camera callback to the command at least the head's share
    keys = ("slot_wait", "preprocess", "head", "result_publish", "command_publish", "callback_to_command")
    wait_until(lambda: diagnostics_value(diags.msgs, "step_callback_to_command_p50_ms") is not None, 5,
               "step times in /diagnostics")
    steps = {k: float(diagnostics_value(diags.msgs, f"step_{k}_p50_ms")) for k in keys}
    assert all(v >= 0 for v in steps.values()) and steps["callback_to_command"] >= steps["head"] > 0, steps


def test_bad_images_are_rejected_and_node_keeps_serving(ros):
    proc = ros.start(drone_spec(diagnostics_period_s=0.2))
    io = DroneIO(ros, CAMERA)
    io.prime()
    results, diags, pub = io.results, io.diags, io.pub

    good = synthetic_frames(2, seed=3)
    bad = []
    m = image_msg(good[0], "rgb8", 1)
    m.encoding = "32FC1"                      # unsupported encoding
    bad.append(m)
    m = image_msg(good[0], "rgb8", 2)
    m.data = m.data[: len(m.data) // 2]       # truncated buffer
    bad.append(m)
    m = image_msg(good[0], "rgb8", 3)
    m.step = 10                               # step smaller than a row
    bad.append(m)
    for m in bad:
        pub.publish(m)
        time.sleep(0.1)
    pub.publish(image_msg(good[1], "rgb8", 4))
    wait_until(lambda: any(r.header.stamp.sec == 4 for r in results.msgs), 20, "a result for the good frame")
    assert [r.header.stamp.sec for r in results.msgs] == [4], "bad frames get no result"
    wait_until(lambda: diagnostics_value(diags.msgs, "images_rejected") == "3", 10, "3 rejections in /diagnostics")
    assert proc.poll() is None, "node must keep running"
    assert "rejected image" in proc.output and "32FC1" in proc.output


def test_busy_node_drops_older_frames_for_the_newest(ros):
    # the large model is slow enough on one thread that a burst overruns it
    ros.start(drone_spec(checkpoint="random:large:0", diagnostics_period_s=0.2))
    io = DroneIO(ros, CAMERA)
    io.prime()
    results, diags, pub = io.results, io.diags, io.pub
    accounting = FrameAccounting("/spinn_drone", diags)

    frames = synthetic_frames(40, seed=5)
    for i, f in enumerate(frames):
        pub.publish(image_msg(f, "rgb8", 10 + i))
        time.sleep(0.002)
    newest = 10 + len(frames) - 1
    wait_until(lambda: any(r.header.stamp.sec == newest for r in results.msgs), 30, "the newest frame's result")
    time.sleep(0.5)
    accounting.check(finals=len(results.msgs), sent=0)
    received, dropped = node_accounting(diags, "/spinn_drone")
    assert dropped - accounting.base[1] > 0, "a burst faster than inference must drop frames"
    assert len({r.header.stamp.sec for r in results.msgs}) == len(results.msgs), "no frame twice"


@pytest.mark.parametrize("overrides, needle", [
    ({"exit_threshold": 1.5}, "parameter 'exit_threshold'=1.5 is invalid: must be a number in (0.0, 1.0]"),
    ({"exit_threshold": 0.0}, "parameter 'exit_threshold'=0.0 is invalid"),
    ({"split_point": 99}, "parameter 'split_point'=99 is invalid: must be -1 or in [0, 7]"),
    ({"checkpoint": "/nonexistent/model.pt"}, "parameter 'checkpoint'='/nonexistent/model.pt'"),
    ({"checkpoint": "random:tiny:0"}, "expected random:<"),
    ({"controller.timeout_s": -1.0}, "parameter 'controller.timeout_s'=-1.0 is invalid"),
    # wrong types: rcl drops these silently beside a params file, or rclpy raises without naming what is allowed
    ({"split_point": "abc"}, "parameter 'split_point' must be of type integer (a number in [-1, 255]), got 'abc'"),
    ({"split_point": 2.5}, "parameter 'split_point' must be of type integer (a number in [-1, 255]), got 2.5"),
    ({"split_point": True}, "parameter 'split_point' must be of type integer (a number in [-1, 255]), got True"),
    ({"exit_threshold": "abc"}, "parameter 'exit_threshold' must be of type double (a number in (0.0, 1.0]"),
    ({"cloud.enabled": 3}, "parameter 'cloud.enabled' must be of type bool, got 3"),
    ({"backend": "tensorrt"}, "parameter 'backend'='tensorrt' is invalid: must be one of 'torch', 'onnxruntime'"),
])
def test_invalid_parameters_fail_fast(ros, overrides, needle):
    code, output = ros.run_to_exit(drone_spec(**overrides), timeout=60)
    assert code == 2, output
    assert needle in output, output
    assert output.count("[FATAL]") == 1 and "Traceback" not in output, f"one FATAL line, no traceback:\n{output}"


def test_parameter_changes_are_validated(ros):
    ros.start(drone_spec())
    client = AsyncParameterClient(ros.node, "spinn_drone")
    set_params = parameter_setter(ros.node, "spinn_drone")
    bad = set_params(exit_threshold=0.0)
    assert not bad.successful and "exit_threshold" in bad.reason and "(0.0, 1.0]" in bad.reason
    bad = set_params(split_point=42)
    assert not bad.successful and "[0, 7]" in bad.reason
    bad = set_params(split_point=2.5)                 # wrong type: named, with what is allowed
    assert not bad.successful and "'split_point' must be of type integer (a number in [-1, 255])" in bad.reason
    bad = set_params(exit_threshold="high")
    assert not bad.successful and "'exit_threshold' must be of type double" in bad.reason
    ok = set_params(exit_threshold=0.6)
    assert ok.successful
    fut = client.get_parameters(["exit_threshold"])
    wait_until(fut.done, 10, "get_parameters reply")
    assert fut.result().values[0].double_value == pytest.approx(0.6)


def test_parameter_ranges_are_in_the_descriptors(ros):
    """What ``ros2 param describe`` shows: the allowed values in the description, ranges typed."""
    ros.start(drone_spec())
    client = AsyncParameterClient(ros.node, "spinn_drone")
    assert client.wait_for_services(timeout_sec=20)
    fut = client.describe_parameters(["cloud.deadline_ms", "cloud.max_in_flight", "exit_threshold"])
    wait_until(fut.done, 10, "describe_parameters reply")
    deadline, in_flight, threshold = fut.result().descriptors
    assert [(r.from_value, r.to_value) for r in deadline.floating_point_range] == [(1.0, 10000.0)]
    assert [(r.from_value, r.to_value) for r in in_flight.integer_range] == [(1, 64)]
    assert "allowed: a number in [1, 64]" in in_flight.description
    assert ".inf (the plain network" in threshold.description


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_camera_sized_frames_reach_the_node_with_sensor_qos(ros, encoding):
    """Real camera sizes over DDS with sensor-data QoS (best effort): with FastDDS's default
    0.5 MB shared-memory segment these never arrive; the package's transport config
    (config/fastdds.xml, applied to every process as the launch files do) delivers them."""
    model, _ = load_model(MODEL)
    ros.start(drone_spec(exit_threshold=0.5))
    io = DroneIO(ros, CAMERA)
    io.prime()
    sizes = [(480, 640), (720, 1280), (1080, 1920)]
    for i, size in enumerate(sizes):
        rgb = synthetic_frames(1, seed=20 + i, size=size)[0]
        frame = as_encoding(rgb, encoding)
        io.pub.publish(image_msg(frame, encoding, stamp_s=2000 + i))
        # one at a time: each frame must arrive by itself, never be replaced by a newer one
        wait_until(lambda stamp=2000 + i: any(r.header.stamp.sec == stamp for r in io.results.msgs), 30,
                   f"the result for the {size[1]}x{size[0]} frame")
        answers = [r for r in io.results.msgs if r.header.stamp.sec == 2000 + i]
        ref = reference_decision(model, to_model_input(frame, model.spec.input_size, encoding), 0.5)
        assert len(answers) == 1 and answers[0].exit_index == ref.exit_index
        assert answers[0].collision_probability == pytest.approx(ref.collision_prob, abs=1e-5)
