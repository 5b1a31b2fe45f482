"""`spinn profile` for real: a tiny profile of a random small model in fresh processes, the
file's schema, and what the scheduler makes of it."""
import json

import numpy as np
import pytest

from spinn_ros.core import profile as P
from spinn_ros.core.model_ref import load_model
from spinn_ros.core.performance import PerformanceModel
from spinn_ros.core.prediction import Conditions
from spinn_ros.core.scheduler import Scheduler
from spinn_ros.core.sla import load_sla
from spinn_ros.testing.toy import make_calibration
from spinn_ros.tools import profile as T

REF = "random:small:0"
ENCODINGS = ["u8-lz4", "f32-none"]


@pytest.fixture(scope="module")
def profiles(tmp_path_factory):
    """Both roles profiled by `spinn profile` itself (one fresh process per role)."""
    out = tmp_path_factory.mktemp("profiles")
    rc = T.main(["--checkpoint", REF, "--runs", "2", "--warmup", "1", "--frames", "2", "--batch-sizes", "1", "2",
                 "--encodings", *ENCODINGS, "--out-dir", str(out), "--host", "testhost", "--quiet",
                 "--dataset", str(out / "none.npz"), "--hop-frames", "20"])
    assert rc == 0
    model, model_id = load_model(REF)
    return model, model_id, out


def test_one_file_per_model_host_and_role(profiles):
    model, model_id, out = profiles
    assert sorted(p.name for p in out.glob("*.json")) == [f"{model_id}-testhost-cloud.json",
                                                          f"{model_id}-testhost-device.json"]
    assert P.find_profile(model_id, "device", "testhost", out) == out / f"{model_id}-testhost-device.json"


def test_device_profile_schema(profiles):
    model, model_id, out = profiles
    path = P.default_profile_path(model_id, "device", "testhost", out)
    data = json.loads(path.read_text())
    header = (data["format"], data["version"], data["role"], data["model_id"])
    assert header == (P.FORMAT, P.VERSION, "device", model_id)
    assert data["settings"]["torch_threads"] == 1 and data["machine"]["torch_threads"] == 1
    assert data["settings"]["inputs"] == "procedural" and data["calibration"] is None   # random models have none
    p = P.load_profile(path, model_id, "device")
    n, e = model.num_stages, model.num_exits
    assert p.exit_stages == list(model.exit_stages)
    assert p.stage_ms().shape == (n,) and p.exit_ms().shape == (e,) and (p.stage_ms() > 0).all()
    assert all(len(data["device"]["head_ms"][k]) == n + 1 for k in P.STATS)
    assert p.preprocess_ms() > 0
    for enc in ENCODINGS:
        assert p.wire_bytes(enc).shape == p.encode_ms(enc).shape == (n,)
    # real encoded requests: u8 + lz4 beats raw float32 at every split but 0 (the same uint8 frame)
    assert (p.wire_bytes("u8-lz4")[1:] < p.wire_bytes("f32-none")[1:]).all()
    assert p.wire_bytes("f32-none")[1] > np.prod(model.split_shape(1)) * 4
    assert data["split_shapes"][1] == list(model.split_shape(1))
    # the node's pass-through, measured through a real drone node over ROS 2 (tools/hops.py)
    hops = data["device"]["hops"]
    assert hops["frames"] >= 10 and hops["camera"] == [model.spec.input_size] * 2
    hop_in, hop_out = p.hop_ms()
    assert 0 < hop_in + hop_out < 100 and p.hop_ms("p90")[0] >= hop_in


def test_cloud_profile_schema(profiles):
    model, model_id, out = profiles
    p = P.load_profile(P.default_profile_path(model_id, "cloud", "testhost", out), model_id, "cloud")
    assert p.batch_sizes == [1, 2]
    for b in p.batch_sizes:
        assert p.stage_ms(batch=b).shape == (model.num_stages,) and p.exit_ms(batch=b).shape == (model.num_exits,)
        assert (p.batch_overhead_ms(b) >= 0).all() and p.batch_overhead_ms(b).shape == (model.num_stages,)
        assert len(p.data["cloud"]["tail_ms"][str(b)]["median"]) == model.num_stages
    assert p.decode_ms("u8-lz4").shape == (model.num_stages,)
    with pytest.raises(ValueError, match="batch size 4 not profiled"):
        p.stage_ms(batch=4)
    with pytest.raises(ValueError, match="encoding 'f16-zstd' not profiled"):
        p.decode_ms("f16-zstd")


def test_another_models_profile_is_refused(profiles):
    _, model_id, out = profiles
    path = P.default_profile_path(model_id, "device", "testhost", out)
    with pytest.raises(P.ProfileError) as err:
        P.load_profile(path, "0123456789abcdef")
    assert str(path) in str(err.value) and model_id in str(err.value) and "0123456789abcdef" in str(err.value)
    with pytest.raises(P.ProfileError, match="role 'device', expected cloud"):
        P.load_profile(path, model_id, "cloud")


@pytest.fixture(scope="module")
def ort_profiles(tmp_path_factory):
    """Both roles profiled on the onnxruntime backend (ONNX files exported on first use into a fresh cache)."""
    out = tmp_path_factory.mktemp("ort-profiles")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPINN_CACHE_DIR", str(out / "cache"))
        rc = T.main(["--checkpoint", REF, "--backend", "onnxruntime", "--runs", "2", "--warmup", "1", "--frames", "2",
                     "--batch-sizes", "1", "2", "--encodings", "u8-lz4", "--out-dir", str(out), "--host", "testhost",
                     "--quiet", "--dataset", str(out / "none.npz")])
    assert rc == 0
    return load_model(REF)[1], out


def test_a_profile_records_its_backend_and_is_refused_for_another(profiles, ort_profiles):
    model_id, out = ort_profiles
    for role in P.ROLES:
        path = P.find_profile(model_id, role, "testhost", out, backend="onnxruntime")
        assert path.name == f"{model_id}-testhost-{role}-onnxruntime.json"
        p = P.load_profile(path, model_id, role, backend="onnxruntime")
        assert p.backend == "onnxruntime" and "CPUExecutionProvider" in p.data["machine"]["providers"]
        with pytest.raises(P.ProfileError, match=f"measured on backend 'onnxruntime', but 'torch' runs.*"
                                                 f"spinn profile --role {role} --backend torch"):
            P.load_profile(path, model_id, role, backend="torch")
    _, torch_id, torch_out = profiles
    torch_path = P.find_profile(torch_id, "device", "testhost", torch_out)
    assert P.load_profile(torch_path, torch_id, "device", backend="torch").backend == "torch"
    with pytest.raises(P.ProfileError, match="measured on backend 'torch', but 'onnxruntime' runs"):
        P.load_profile(torch_path, torch_id, "device", backend="onnxruntime")
    with pytest.raises(P.ProfileNotFound, match="on backend onnxruntime.*--backend onnxruntime"):
        P.find_profile(torch_id, "device", "testhost", torch_out, backend="onnxruntime")


def test_slowdown_scales_device_times(profiles):
    _, model_id, out = profiles
    path = P.default_profile_path(model_id, "device", "testhost", out)
    data = json.loads(path.read_text())
    data["settings"]["time_scale"] = 3.0
    slow = P.Profile(data, "scaled")
    base = P.load_profile(path, model_id)
    np.testing.assert_allclose(slow.stage_ms(), 3 * base.stage_ms())
    np.testing.assert_allclose(slow.wire_bytes("u8-lz4"), base.wire_bytes("u8-lz4"))     # bytes do not scale


def test_real_profiles_drive_the_scheduler(profiles):
    """Measured profiles + a calibration of the same geometry: a decision comes out."""
    model, model_id, out = profiles
    n = model.num_stages
    cal = make_calibration(model_id=model_id, rates=[[1 / n] * n, [0.0] * (n - 1) + [1.0]],
                           exit_acc=[[0.9] * n, [None] * (n - 1) + [0.95]], thresholds=[0.9, 1.0],
                           exit_stages=model.exit_stages, standalone=[0.8] * n, num_stages=n)
    perf = PerformanceModel(P.load_profile(P.find_profile(model_id, "device", "testhost", out), model_id),
                            P.load_profile(P.find_profile(model_id, "cloud", "testhost", out), model_id), cal)
    d = Scheduler(perf, load_sla()).decide(Conditions(bandwidth_mbps=50.0, rtt_ms=20.0, encoding="u8-lz4"))
    assert 0 <= d.split <= n and d.reason
