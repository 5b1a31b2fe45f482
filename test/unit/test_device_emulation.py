"""SlowerDevice (core/device_emulation.py): pads each head to ``factor`` x its idle-machine cost,
taken from a device profile (or measured once at start-up), never to ``factor`` x the time a
frame happened to take here."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from spinn_ros.core.device_emulation import SlowerDevice
from spinn_ros.core.model_ref import load_model

STAGE_MS = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
EXIT_MS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]


class FakeProfile:
    """What SlowerDevice reads from a device profile (core/profile.py's Profile)."""

    source = "fake-device.json"

    def stage_ms(self) -> np.ndarray:
        return np.array(STAGE_MS)

    def exit_ms(self) -> np.ndarray:
        return np.array(EXIT_MS)

    def preprocess_ms(self) -> float:
        return 2.5

    def encode_ms(self, encoding: str) -> np.ndarray:
        per_split = {"f32-lz4": [10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0], "u8-zstd": [1.0] * 7}
        if encoding not in per_split:
            raise ValueError(f"encoding {encoding!r} not profiled")
        return np.array(per_split[encoding])


@pytest.fixture(scope="module")
def model():
    m, _ = load_model("random:small:0")
    # the fake profile's tables assume this geometry: an exit after every one of 7 stages
    assert m.num_stages == len(STAGE_MS) and m.num_exits == len(EXIT_MS) and m.exit_stages == tuple(range(7))
    return m


@pytest.mark.parametrize("factor", [0.5, 0.0, -2.0])
def test_a_factor_below_one_is_refused(model, factor):
    with pytest.raises(ValueError, match=f"slowdown factor must be >= 1, got {factor}"):
        SlowerDevice(model, factor)


def test_factor_one_emulates_nothing(model):
    dev = SlowerDevice(model, 1.0, profile=FakeProfile())
    assert dev.source == "none" and dev.stage_s == [0.0] * 7 and dev.preprocess_s == 0.0
    assert dev.encode_s("f32-lz4", 3) == 0.0, "the profile is not used at factor 1"
    start = time.perf_counter()
    assert dev.pad_to(5.0, 0.001) == 0.001 and dev.pad(0, 7, 0.002) == 0.002
    assert time.perf_counter() - start < 0.5, "factor 1 never sleeps"


def test_costs_come_from_the_profile(model):
    dev = SlowerDevice(model, 3.0, profile=FakeProfile())
    assert dev.source == "profile fake-device.json"
    assert dev.stage_s == pytest.approx([ms / 1e3 for ms in STAGE_MS])
    assert dev.exit_s == pytest.approx([ms / 1e3 for ms in EXIT_MS])
    assert dev.preprocess_s == pytest.approx(2.5e-3)
    assert dev.encode_s("f32-lz4", 2) == pytest.approx(12e-3) and dev.encode_s("u8-zstd", 6) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="not profiled"):
        dev.encode_s("f16-none", 2)


def test_cost_counts_stages_and_the_exits_among_them(model):
    dev = SlowerDevice(model, 2.0, profile=FakeProfile())
    # stages 2, 3, 4 and their exits 2, 3, 4
    assert dev.cost_s(2, 5) == pytest.approx((3 + 4 + 5 + 0.3 + 0.4 + 0.5) / 1e3)
    assert dev.cost_s(0, 7) == pytest.approx((sum(STAGE_MS) + sum(EXIT_MS)) / 1e3)
    assert dev.cost_s(3, 3) == 0.0
    # the plain network runs only the final exit head
    assert dev.cost_s(2, 5, plain=True) == pytest.approx((3 + 4 + 5) / 1e3)
    assert dev.cost_s(0, 7, plain=True) == pytest.approx((sum(STAGE_MS) + 0.7) / 1e3)


def test_pad_tops_up_to_factor_times_the_idle_cost(model):
    dev = SlowerDevice(model, 4.0, profile=FakeProfile())
    idle = dev.cost_s(0, 2)                               # (1 + 2 + 0.1 + 0.2) ms = 3.3 ms -> target 13.2 ms
    start = time.perf_counter()
    emulated = dev.pad(0, 2, measured_s=0.002)
    slept = time.perf_counter() - start
    assert emulated == pytest.approx(4.0 * idle)
    assert slept >= 4.0 * idle - 0.002 - 1e-3, "slept less than the missing time"


def test_pad_target_does_not_scale_this_machines_momentary_load(model):
    """The module's point: a frame that ran slowly here gets less padding, not factor x its time."""
    dev = SlowerDevice(model, 2.0, profile=FakeProfile())
    idle = 0.05
    quick, slow = dev.pad_to(idle, 0.01), dev.pad_to(idle, 0.04)
    assert quick == pytest.approx(0.1) and slow == pytest.approx(0.1), "both emulate 2 x the idle cost"
    start = time.perf_counter()
    assert dev.pad_to(idle, 0.3) == 0.3, "already slower than the target: no padding, the real time counts"
    assert time.perf_counter() - start < 0.05


def test_without_a_profile_costs_are_measured_at_start_up(model):
    dev = SlowerDevice(model, 2.0, runs=2)
    assert dev.source == "measured at start-up"
    assert len(dev.stage_s) == 7 and all(s > 0 for s in dev.stage_s)
    assert len(dev.exit_s) == 7 and all(s > 0 for s in dev.exit_s)
    assert dev.cost_s(0, 7) == pytest.approx(sum(dev.stage_s) + sum(dev.exit_s))
    assert dev.encode_s("f32-lz4", 3) == 0.0 and dev.preprocess_s == 0.0, "not known without a profile: not padded"


def test_a_nan_factor_is_refused(model):
    try:
        dev = SlowerDevice(model, math.nan)
    except ValueError:
        return
    pytest.fail(f"accepted slowdown nan; pad_to(0.01, 0.001) = {dev.pad_to(0.01, 0.001)}")
