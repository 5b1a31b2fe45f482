"""SLA files: the shipped ones load, and every mistake gets a message naming the file and key."""
from pathlib import Path

import pytest

from spinn_ros.core.sla import OBJECTIVES, SLAError, default_sla_path, load_sla, parse_sla

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", [default_sla_path(), *sorted((ROOT / "config" / "sla").glob("*.yaml"))])
def test_shipped_slas_load(path):
    sla = load_sla(path)
    assert sla.objectives and all(o.name in OBJECTIVES for o in sla.objectives)
    assert sla.source == str(path)


def test_default_sla_contents():
    sla = load_sla()
    assert sla.name == "default" and sla.percentile == 95
    bounds = {b.key: b for b in sla.bounds}
    assert bounds["latency_ms"].upper and bounds["latency_ms"].limit == 100
    assert not bounds["min_accuracy"].upper and bounds["min_accuracy"].ok(0.9) and not bounds["min_accuracy"].ok(0.7)
    assert sla.objectives[0].name == "maximize_on_time_accuracy" and sla.objectives[0].tolerance == 0.005
    assert sla.objectives[1].name == "maximize_accuracy" and not sla.hold_device_answer and sla.on_time_ms == 100
    assert "p95 latency <= 100 ms" in sla.describe()


def test_objective_forms_and_tolerance_band():
    sla = parse_sla({"objectives": ["minimize_bytes", {"maximize_throughput": {"relative_tolerance": 0.1}},
                                    {"maximize_accuracy": None}]})
    assert [o.name for o in sla.objectives] == ["minimize_bytes", "maximize_throughput", "maximize_accuracy"]
    assert sla.bounds == () and sla.percentile == 95
    assert sla.objectives[1].band(30.0) == pytest.approx(3.0)


def test_latency_percentile_is_read():
    sla = parse_sla({"constraints": {"latency_ms": {"max": 40, "percentile": 99}}, "objectives": ["minimize_latency"]})
    assert sla.percentile == 99 and sla.bounds[0].label == "p99 latency <= 40 ms"


@pytest.mark.parametrize("data, message", [
    ({"objectives": ["maximize_accuracy"], "constraint": {}},
     r"top level: unknown key 'constraint' \(did you mean 'constraints'\?\)"),
    ({"objectives": ["maximize_accuracy"], "constraints": {"max_latency": 3}},
     r"constraints: unknown key 'max_latency'"),
    ({"objectives": ["maximise_accuracy"]},
     r"objectives\[0\]: unknown objective 'maximise_accuracy' \(did you mean 'maximize_accuracy'\?\)"),
    ({"objectives": ["maximize_accuracy", "minimize_latency", "maximize_accuracy"]},
     r"objectives\[2\]: 'maximize_accuracy' is already priority 1"),
    ({"objectives": []}, r"objectives: must be a non-empty list"),
    ({"constraints": {}}, r"objectives: missing"),
    ({"objectives": ["minimize_latency"], "constraints": {"min_accuracy": 1.5}},
     r"constraints.min_accuracy: 1.5 is outside \[0.0, 1.0\]"),
    ({"objectives": ["minimize_latency"], "constraints": {"latency_ms": {"max": 0}}},
     r"constraints.latency_ms.max: 0 is outside \(0"),
    ({"objectives": ["minimize_latency"], "constraints": {"latency_ms": {"max": 50, "percentile": 120}}},
     r"constraints.latency_ms.percentile: 120 is outside \(0, 100\]"),
    ({"objectives": ["minimize_latency"], "constraints": {"latency_ms": {"percentile": 95}}},
     r"constraints.latency_ms: needs 'max'"),
    ({"objectives": ["minimize_latency"], "constraints": {"latency_ms": 50}},
     r"constraints.latency_ms: must be a mapping"),
    ({"objectives": ["minimize_latency"], "constraints": {"max_server_ms_per_frame": "lots"}},
     r"constraints.max_server_ms_per_frame: must be a finite number"),
    ({"objectives": ["minimize_latency"], "constraints": {"min_throughput_fps": True}},
     r"constraints.min_throughput_fps: must be a finite number, got True"),
    ({"objectives": [{"minimize_latency": {"tolerance": -1}}]},
     r"objectives\[0\] \(minimize_latency\).tolerance: -1 is outside"),
    ({"objectives": [{"minimize_latency": {"tol": 1}}]}, r"objectives\[0\] \(minimize_latency\): unknown key 'tol'"),
    ({"objectives": [{"minimize_latency": {}, "maximize_accuracy": {}}]},
     r"objectives\[0\]: must be an objective name or a one-key"),
    ({"objectives": ["minimize_latency"], "version": 2}, r"version: 2, this code reads version 1"),
    (["minimize_latency"], r"top level: must be a mapping"),
])
def test_errors_name_the_key(data, message):
    with pytest.raises(SLAError, match=r"SLA mem.yaml: " + message):
        parse_sla(data, "mem.yaml")


def test_file_errors(tmp_path):
    with pytest.raises(SLAError, match="no such file"):
        load_sla(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("objectives: [unclosed\n")
    with pytest.raises(SLAError, match=f"SLA {bad}: unreadable or not YAML"):
        load_sla(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("objectives: [maximize_acuracy]\n")
    with pytest.raises(SLAError, match=f"SLA {typo}: objectives\\[0\\]: unknown objective"):
        load_sla(typo)


def test_hold_device_answer_and_on_time_accuracy_keys():
    sla = parse_sla({"constraints": {"hold_device_answer": True, "min_on_time_accuracy": 0.9},
                     "objectives": ["maximize_on_time_accuracy"]})
    assert sla.hold_device_answer and sla.on_time_ms is None and "always holds an answer" in sla.describe()
    assert [b.metric for b in sla.bounds] == ["on_time_accuracy"]
    with pytest.raises(SLAError, match=r"constraints.hold_device_answer: must be true or false, got 'yes'"):
        parse_sla({"constraints": {"hold_device_answer": "yes"}, "objectives": ["minimize_latency"]})
