"""Profiles without measuring: the committed reference profiles, refused files, the calibration
reference and the stand-in input of `spinn profile` (measuring: test/system/test_profile_tool.py)."""
import json

import numpy as np
import pytest

from spinn_ros.core import profile as P
from spinn_ros.core.calibration import CalibrationError, save_calibration
from spinn_ros.core.checkpoint import calibration_path, save_checkpoint
from spinn_ros.core.model import build_model
from spinn_ros.testing.toy import make_calibration
from spinn_ros.tools import profile as T

REF = "random:small:0"
ENCODINGS = ["u8-lz4", "f32-none"]


def test_committed_reference_profiles_exist_for_both_backends():
    from spinn_ros.core.checkpoint import default_checkpoint_path, load_checkpoint

    model_id = load_checkpoint(default_checkpoint_path())[1]["model_id"]
    for backend in ("torch", "onnxruntime"):
        for role in P.ROLES:
            path = P.find_profile(model_id, role, P.REFERENCE_HOST, backend=backend)
            assert P.load_profile(path, model_id, role, backend=backend).backend == backend


def test_broken_files_are_refused(tmp_path):
    with pytest.raises(P.ProfileNotFound, match="no such file"):
        P.load_profile(tmp_path / "x.json", None)
    with pytest.raises(P.ProfileNotFound, match="spinn profile --role device"):
        P.find_profile("abc", "device", "h", tmp_path)
    cases = {"notjson": "{", "other": json.dumps({"format": "something"}),
             "old": json.dumps({"format": P.FORMAT, "version": 0}),
             "short": json.dumps({"format": P.FORMAT, "version": P.VERSION, "model_id": "m", "role": "device",
                                  "num_stages": 3, "exit_stages": [2], "settings": {},
                                  "device": {"stage_ms": {"median": [1], "p90": [1], "mean": [1]}}})}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    for name, msg in [("notjson", "not JSON"), ("other", "not a spinn profile"), ("old", "version 0"),
                      ("short", "lists of 3 stages")]:
        with pytest.raises(P.ProfileError, match=msg):
            P.load_profile(tmp_path / name, None)


def test_hops_are_optional_checked_and_not_scaled(tmp_path):
    base = P.synthetic_profile("device", model_id="m", exit_stages=[0], stage_ms=[1.0], exit_ms=[0.1],
                               wire_bytes=[100], hop_ms=(2.0, 1.0))
    assert base.has_hops and base.hop_ms() == (2.0, 1.0)
    data = json.loads(json.dumps(base.data))
    data["settings"]["time_scale"] = 20.0            # an emulated slower drone pads its model, not its middleware
    (tmp_path / "scaled.json").write_text(json.dumps(data))
    scaled = P.load_profile(tmp_path / "scaled.json", "m", "device")
    assert scaled.hop_ms("p90") == (2.0, 1.0) and scaled.stage_ms()[0] == 20.0
    del data["device"]["hops"]
    (tmp_path / "none.json").write_text(json.dumps(data))
    assert P.load_profile(tmp_path / "none.json", "m").hop_ms() == (0.0, 0.0)
    for bad in ({"in_ms": {"median": 1.0}}, {"in_ms": {k: -1.0 for k in P.STATS}, "out_ms": {k: 1.0 for k in P.STATS}}):
        data["device"]["hops"] = bad
        (tmp_path / "bad.json").write_text(json.dumps(data))
        with pytest.raises(P.ProfileError, match="hops must hold in_ms and out_ms"):
            P.load_profile(tmp_path / "bad.json", "m")


def test_hops_only_needs_the_device_role(capsys):
    assert T.main(["--role", "cloud", "--hops", "only"]) == 2
    assert "--hops only needs --role device" in capsys.readouterr().err
    assert T.main(["--hop-frames", "3"]) == 2


def test_calibration_reference_checks_the_model(tmp_path):
    ckpt = tmp_path / "m.pt"
    mid = save_checkpoint(ckpt, build_model("small", seed=1))
    assert T.calibration_reference(str(ckpt), mid, None) == {"path": str(calibration_path(ckpt)), "model_id": None}
    cal = make_calibration(model_id=mid)
    save_calibration(calibration_path(ckpt), {**cal.data, "format": "spinn-calibration", "version": 1})
    assert T.calibration_reference(str(ckpt), mid, None) == {"path": str(calibration_path(ckpt)), "model_id": mid}
    with pytest.raises(CalibrationError, match="made for model"):
        T.calibration_reference(str(ckpt), "another", None)
    assert T.calibration_reference(REF, "x", None) is None


def test_bad_arguments_fail_cleanly(capsys):
    assert T.main(["--runs", "0"]) == 2
    assert T.main(["--checkpoint", "random:huge:1"]) == 2
    assert "bad model reference" in capsys.readouterr().err


def test_procedural_frames_look_like_frames():
    frames, source = T.input_frames(3, 64, None)
    assert frames.shape == (3, 64, 64, 3) and frames.dtype == np.uint8 and source == "procedural"
    assert frames.std() > 10


def test_dataset_frames_are_used_when_present(tmp_path):
    from spinn_ros.sim.dataset import FORMAT, VERSION, save_split

    n = 6
    arrays = {"images": np.arange(n * 16 * 16 * 3, dtype=np.uint8).reshape(n, 16, 16, 3),
              "collision": np.zeros(n, np.uint8), "steering": np.zeros(n, np.float32),
              "nearest": np.ones(n, np.float32), "pose": np.zeros((n, 6), np.float32), "world": np.arange(n),
              "family": np.zeros(n, np.uint8), "textured": np.ones(n, np.uint8)}
    path = tmp_path / "val.npz"
    save_split(path, arrays, {"format": FORMAT, "version": VERSION})
    frames, source = T.input_frames(3, 16, path)
    assert source == f"dataset {path}" and frames.shape == (3, 16, 16, 3)
    np.testing.assert_array_equal(frames[[0, -1]], arrays["images"][[0, -1]])    # spread over the split
