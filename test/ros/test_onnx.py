"""The onnxruntime backend against torch, on the shipped checkpoint and simulator frames.

Decisions must be identical at every calibrated threshold and every split, exit
probabilities within 1e-5, and the two backends must mix across the wire (a torch
head with an onnxruntime tail and the reverse). Also: ``spinn export`` is deterministic
and checked, its manifest is tied to the model, the provider fallback says once what is
missing, and the torch path runs without onnxruntime installed.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from spinn_ros.core import codec
from spinn_ros.core import onnx_export as X
from spinn_ros.core.backend import PROVIDERS, BackendError, OrtStagedModel, staged_model
from spinn_ros.core.calibration import load_calibration
from spinn_ros.core.checkpoint import calibration_path, default_checkpoint_path
from spinn_ros.core.model import decode_exit
from spinn_ros.core.model_ref import load_model
from spinn_ros.core.preprocess import to_model_input
from spinn_ros.core.progressive import run_head, run_tail
from spinn_ros.testing.frames import synthetic_frames

PROB_TOL = 1e-5
HEAD_FRAMES = 10          # run_head at every (split, threshold) pair: 8 x 30 calls per frame and backend


@pytest.fixture(scope="module")
def shipped():
    return load_model("default")


@pytest.fixture(scope="module")
def onnx_dir(shipped, tmp_path_factory):
    model, model_id = shipped
    out = tmp_path_factory.mktemp("onnx") / model_id
    X.export_model(model, model_id, out)
    return out


@pytest.fixture(scope="module")
def ort(shipped, onnx_dir):
    model, model_id = shipped
    return staged_model(model, model_id, "onnxruntime", onnx_dir=onnx_dir, log=lambda msg: None)


@pytest.fixture(scope="module")
def frames(shipped):
    """Model inputs: simulator frames of test-split worlds (obstacles near and far) and a few synthetic ones."""
    from spinn_ros.sim.dataset import SPLIT_SEED_BASE, render_world

    size = shipped[0].spec.input_size
    sim = np.concatenate([render_world(SPLIT_SEED_BASE["test"] + 910_000 + i, 8, size)["images"] for i in range(3)])
    pixels = list(sim) + synthetic_frames(6, seed=3)
    return [to_model_input(p, size) for p in pixels]


@pytest.fixture(scope="module")
def thresholds(shipped):
    return load_calibration(calibration_path(default_checkpoint_path()), shipped[1]).thresholds


def _same_decision(a, b, where: str) -> None:
    assert (a is None) == (b is None), where
    if a is None:
        return
    assert a.exit_index == b.exit_index and a.steering_bin == b.steering_bin, f"{where}: {a} vs {b}"
    for field in ("collision_prob", "confidence", "steering"):
        assert abs(getattr(a, field) - getattr(b, field)) <= PROB_TOL, f"{where}: {field} {a} vs {b}"


# -- export -------------------------------------------------------------------------------------


def test_export_is_deterministic_checked_and_tied_to_the_model(shipped, onnx_dir, tmp_path):
    model, model_id = shipped
    again = tmp_path / "again"
    X.export_model(model, model_id, again)
    manifest = X.load_manifest(onnx_dir, model_id)
    assert manifest["model_id"] == model_id and manifest["opset"] == X.OPSET
    parts = manifest["stages"] + manifest["exits"]
    assert len(manifest["stages"]) == model.num_stages and len(manifest["exits"]) == model.num_exits
    for entry in parts:
        assert (again / entry["file"]).read_bytes() == (onnx_dir / entry["file"]).read_bytes(), entry["file"]
        graph = onnx.load(str(onnx_dir / entry["file"]))
        onnx.checker.check_model(graph, full_check=True)
        assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"    # dynamic batch axis
    with pytest.raises(X.ExportError, match="not 0123456789abcdef"):
        X.load_manifest(onnx_dir, "0123456789abcdef")
    (again / X.stage_file(3)).write_bytes(b"edited")
    with pytest.raises(X.ExportError, match="stage3.onnx: missing or not the file the manifest lists"):
        X.load_manifest(again, model_id)


def test_export_never_deletes_a_directory_that_is_not_an_export(shipped, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(X.ExportError, match="not an export"):
        X.export_model(*shipped, tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_spinn_export_cli_writes_the_default_checkpoint(tmp_path):
    out = subprocess.run([sys.executable, "-m", "spinn_ros.tools.cli", "export", "--checkpoint", "default", "--out",
                          str(tmp_path / "x")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "onnx.checker passed" in out.stdout and "[14/14]" in out.stdout
    assert json.loads((tmp_path / "x" / X.MANIFEST).read_text())["model_id"] == load_model("default")[1]


# -- the backend seam -----------------------------------------------------------------------------


def test_every_part_matches_torch_at_batch_1_and_8(shipped, ort, frames):
    model, _ = shipped
    for batch in (1, 8):
        x = torch.cat(frames[:batch])
        with torch.inference_mode():
            for stage in range(model.num_stages):
                want, got = model.run_stage(stage, x), ort.run_stage(stage, x)
                assert got.shape == want.shape and float((got - want).abs().max()) < 1e-4, f"stage {stage}"
                e = model.exit_index_at(stage)
                if e is not None:
                    a, b = decode_exit(model.run_exit(e, want)), decode_exit(ort.run_exit(e, want))
                    assert float((a.collision_prob - b.collision_prob).abs().max()) <= PROB_TOL, f"exit {e}"
                    assert torch.equal(a.steering_bin, b.steering_bin)
                x = want


def test_head_decisions_identical_at_every_calibrated_threshold_and_split(shipped, ort, frames, thresholds):
    model, _ = shipped
    for i, x in enumerate(frames[:: len(frames) // HEAD_FRAMES][:HEAD_FRAMES]):
        for split in model.split_points():
            for t in thresholds:
                a, b = run_head(model, x, split, t), run_head(ort, x, split, t)
                where = f"frame {i}, split {split}, threshold {t}"
                _same_decision(a.final, b.final, where)
                _same_decision(a.provisional, b.provisional, where)
                assert a.stages_run == b.stages_run, where
                if a.activation is not None:
                    assert float((a.activation - b.activation).abs().max()) < 1e-4, where


def test_tail_decisions_identical_on_the_test_set_at_every_threshold_and_split(shipped, ort, frames, thresholds):
    """Batched tails, one row per (frame, threshold): each row leaves at its own exit."""
    model, _ = shipped
    rows = torch.cat(frames).repeat_interleave(len(thresholds), dim=0)
    per_row = torch.tensor(thresholds * len(frames), dtype=torch.float64)
    with torch.inference_mode():
        for split in range(model.num_stages):
            a, b = run_tail(model, rows, split, per_row), run_tail(ort, rows, split, per_row)
            for r, (da, db) in enumerate(zip(a, b)):
                _same_decision(da, db, f"split {split}, frame {r // len(thresholds)}, threshold {float(per_row[r])}")
            rows = model.run_stage(split, rows)


@pytest.mark.parametrize("head_backend", ["torch", "onnxruntime"])
def test_backends_mix_across_the_wire_at_full_precision(shipped, ort, frames, head_backend):
    """A torch head with an onnxruntime tail (and the reverse) answers as torch does on both sides."""
    model, model_id = shipped
    head, tail = (model, ort) if head_backend == "torch" else (ort, model)
    shapes, threshold = codec.split_shapes(model), 0.999
    for split in range(1, model.num_stages):
        sent, reference = [], []
        for x in frames:
            mine, want = run_head(head, x, split, threshold), run_head(model, x, split, threshold)
            _same_decision(mine.provisional, want.provisional, f"split {split} provisional")
            if mine.activation is None:
                continue
            wire = codec.encode_request(mine.activation, request_id=1, model_id=model_id, split=split,
                                        exit_threshold=threshold, dtype=codec.Dtype.F32, codec=codec.Codec.LZ4)
            sent.append(codec.decode_request(wire, expected_model_id=model_id, expected_shapes=shapes).tensor)
            reference.append(want.activation[0])
        if not sent:
            continue
        got = run_tail(tail, torch.stack(sent), split, threshold)
        want = run_tail(model, torch.stack(reference), split, threshold)
        for r, (a, b) in enumerate(zip(got, want)):
            _same_decision(a, b, f"{head_backend} head, split {split}, offloaded frame {r}")


def test_cloud_tail_server_on_onnxruntime_answers_as_torch(shipped, ort, frames):
    """The cloud's batching server (what spinn cloud --backend onnxruntime runs) on wire frames from many drones."""
    import threading

    from spinn_ros.core.tail_server import TailServer

    model, model_id = shipped
    split, threshold = 2, 0.999
    acts = [run_head(model, x, split, threshold) for x in frames]
    offloaded = [h.activation for h in acts if h.activation is not None]
    assert offloaded, "some frames must need the tail at this threshold"
    replies, done = {}, threading.Event()

    def respond(rid):
        def put(payload):
            replies[rid] = codec.decode_reply(payload, num_exits=model.num_exits)
            if len(replies) == len(offloaded):
                done.set()
        return put

    server = TailServer(ort, model_id, max_batch=8, max_wait_ms=20.0)
    try:
        for rid, a in enumerate(offloaded):
            server.submit(codec.encode_request(a, request_id=rid, model_id=model_id, split=split,
                                               exit_threshold=threshold, dtype=codec.Dtype.F32, codec=codec.Codec.NONE),
                          respond(rid), drone=f"drone{rid % 3}")
        assert done.wait(60), f"{len(replies)}/{len(offloaded)} replies"
    finally:
        server.close()
    want = run_tail(model, torch.cat(offloaded), split, threshold)
    for rid, w in enumerate(want):
        r = replies[rid]
        assert r.exit_index == w.exit_index and abs(r.collision_prob - w.collision_prob) <= PROB_TOL, rid


# -- providers, errors, no onnxruntime ------------------------------------------------------------


def test_provider_fallback_is_one_log_line_naming_what_is_missing(shipped, onnx_dir):
    model, model_id = shipped
    lines: list[str] = []
    ort = OrtStagedModel(model, model_id, onnx_dir=onnx_dir, log=lines.append)
    available = onnxruntime.get_available_providers()
    missing = [p for p in PROVIDERS if p not in available]
    assert ort.providers == [p for p in PROVIDERS if p in available] and ort.providers[-1] == "CPUExecutionProvider"
    assert len(lines) == 1, lines
    assert all(p in lines[0] for p in missing) and ort.providers[0] in lines[0], lines
    with pytest.raises(AttributeError, match="torch compute"):
        ort.stages                      # noqa: B018 - the torch modules are not reachable through the backend


def test_missing_export_is_made_on_first_use_into_the_cache(shipped, tmp_path, monkeypatch):
    model, model_id = shipped
    monkeypatch.setenv("SPINN_CACHE_DIR", str(tmp_path))
    lines: list[str] = []
    ort = staged_model(model, model_id, "onnxruntime", log=lines.append)
    assert ort.onnx_dir == tmp_path / "onnx" / model_id and "exporting model" in lines[0]
    assert X.load_manifest(ort.onnx_dir, model_id)["model_id"] == model_id


def test_an_unknown_backend_names_the_allowed_ones(shipped):
    with pytest.raises(BackendError, match="unknown backend 'tensorrt'; choose one of torch, onnxruntime"):
        staged_model(*shipped, "tensorrt")


def test_torch_backend_works_without_onnxruntime():
    code = ("import sys; sys.modules['onnxruntime'] = None; sys.modules['onnx'] = None\n"
            "import torch\n"
            "from spinn_ros.core.backend import staged_model, BackendError\n"
            "from spinn_ros.core.model_ref import load_model\n"
            "from spinn_ros.core.progressive import run_head\n"
            "import spinn_ros.core.profile, spinn_ros.cloud_service\n"
            "m, mid = load_model('random:small:0')\n"
            "assert staged_model(m, mid, 'torch') is m\n"
            "print(run_head(m, torch.zeros(1, 3, 128, 128), 3, 0.9).stages_run)\n"
            "try:\n    staged_model(m, mid, 'onnxruntime')\nexcept BackendError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "needs the onnxruntime package (pip install onnxruntime" in out.stdout, out.stdout


def test_drone_node_runs_the_head_on_onnxruntime(ros, shipped, tmp_path):
    """One frame stream through the real node with backend:=onnxruntime answers as torch does."""
    from spinn_ros.tools import launch_spec
    from spinn_ros.tools.waiting import wait_until

    from helpers import DroneIO, image_msg

    model, _ = shipped
    ros.env["SPINN_CACHE_DIR"] = str(tmp_path)          # the node exports on first use, into this cache
    camera, threshold = "/test_onnx/camera", 0.99
    ros.start(launch_spec.drone(camera_topic=camera, with_monitor=False, backend="onnxruntime",
                                overrides={"cloud.enabled": False, "exit_threshold": threshold})[0])
    io = DroneIO(ros, camera)
    io.prime()
    pixels = synthetic_frames(6, seed=5)
    for i, p in enumerate(pixels):
        io.pub.publish(image_msg(p, "rgb8", stamp_s=2000 + i))
        time.sleep(0.1)
    wait_until(lambda: 2000 + len(pixels) - 1 in io.finals(2000), 30, "the last result")
    for sec, msg in io.finals(2000).items():
        want = run_head(model, to_model_input(pixels[sec - 2000], model.spec.input_size), model.num_stages,
                        threshold).final
        assert msg.exit_index == want.exit_index, sec
        assert abs(msg.collision_probability - want.collision_prob) <= PROB_TOL, sec


def test_monitor_plans_with_onnxruntime_profiles_and_refuses_a_torch_one(ros, shipped):
    from spinn_ros.core.profile import REFERENCE_HOST, find_profile
    from spinn_ros.msg import SplitPlan
    from spinn_ros.ros import qos
    from spinn_ros.tools import launch_spec
    from spinn_ros.tools.ports import free_port
    from spinn_ros.tools.waiting import wait_until

    from helpers import Collector

    model_id = shipped[1]
    torch_profile = find_profile(model_id, "device", REFERENCE_HOST)
    code, output = ros.run_to_exit(launch_spec.monitor(overrides={"backend": "onnxruntime",
                                                                  "device_profile": str(torch_profile)})[0])
    assert code == 2 and "measured on backend 'torch', but 'onnxruntime' runs" in output, output
    ort = {"backend": "onnxruntime", "cloud_backend": "onnxruntime", "zenoh.connect": f"tls/127.0.0.1:{free_port()}"}
    proc = ros.start(launch_spec.monitor(namespace="onnx_monitor", overrides=ort)[0])
    plans = Collector(ros.node, SplitPlan, "/onnx_monitor/spinn/plan", qos.LATCHED)
    wait_until(lambda: plans.msgs, 60, "the monitor's first plan")
    assert plans.msgs[0].model_id == model_id
    wait_until(lambda: "device-onnxruntime.json (onnxruntime)" in proc.output, 10, "the monitor naming its profiles")
