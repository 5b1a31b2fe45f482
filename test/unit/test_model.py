"""The early-exit model: sizes, derived exits, stage-by-stage equivalence at every split."""
import copy

import pytest
import torch

from spinn_ros.core.model import SPECS, build_model, decode_exit
from spinn_ros.testing.models import run_tail

torch.set_num_threads(1)


def run_head(model, x, split):
    """Stages [0, split) and the exits among them: what the drone runs (the tail: bench_codec.run_tail)."""
    outs = []
    for stage in range(split):
        x = model.run_stage(stage, x)
        e = model.exit_index_at(stage)
        if e is not None:
            outs.append(model.run_exit(e, x))
    return x, outs


@pytest.fixture(scope="module", params=sorted(SPECS))
def model(request):
    return build_model(request.param, seed=0)


@torch.no_grad()
def test_head_plus_tail_equals_whole_model_at_every_split(model):
    model = copy.deepcopy(model)
    x = torch.rand(2, *model.input_shape(), generator=torch.Generator().manual_seed(1))
    # perturb BN statistics so the check is not trivially about identity-like layers
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    reference = model(x)
    for split in model.split_points():
        activation, head = run_head(model, x, split)
        assert tuple(activation.shape[1:]) == model.split_shape(split)
        assert len(head) == len(model.exits_in(0, split))
        outs = head + run_tail(model, activation, split)
        assert len(outs) == len(reference)
        for a, b in zip(outs, reference):
            assert torch.equal(a, b), f"split {split} differs"


def test_sizes_are_in_the_intended_mac_ranges():
    small, large = build_model("small"), build_model("large")
    assert 10e6 < small.total_macs() < 100e6          # DroNet-sized
    assert 100e6 < large.total_macs() < 1000e6
    assert sum(p.numel() for p in small.parameters()) < 2_000_000   # a checkpoint of a few MB


def test_exits_are_derived_from_the_spec(model):
    stages = model.exit_stages
    assert list(stages) == sorted(set(stages)) and stages[-1] == model.num_stages - 1
    assert model.num_exits == len(stages) >= 3
    fractions = [model.macs_to_exit(e) / model.total_macs() for e in range(model.num_exits)]
    assert fractions[0] < 0.3 and fractions[-1] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(fractions, fractions[1:]))


def test_build_is_reproducible_and_outputs_decode(model):
    again = build_model(model.spec, seed=0)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    with torch.no_grad():
        raw = model(torch.rand(3, *model.input_shape()))
    for r in raw:
        d = decode_exit(r)
        assert torch.all((d.confidence >= 0.5) & (d.confidence <= 1))
        assert torch.all(d.steering.abs() <= 1)
        assert torch.all((d.steering_bin >= 0) & (d.steering_bin < model.spec.steering_bins))


def test_wrong_input_size_fails_clearly():
    m = build_model("small")
    with pytest.raises(ValueError, match="expects input Bx3x128x128"):
        m(torch.zeros(1, 3, 96, 96))


@torch.no_grad()
def test_plain_network_skips_the_intermediate_exit_heads(model):
    """Threshold PLAIN_NETWORK: the final exit answers and no other exit head runs, on the drone
    (head, or the whole network), in the cloud's tail, and in a device-side tail."""
    from spinn_ros.core.progressive import PLAIN_NETWORK
    from spinn_ros.core.progressive import run_head as head_policy
    from spinn_ros.core.progressive import run_tail as tail_policy

    model = copy.deepcopy(model).eval()
    calls = []
    for i, head in enumerate(model.exits):
        head.register_forward_hook(lambda m, inp, out, i=i: calls.append(i))
    x = torch.rand(1, *model.input_shape(), generator=torch.Generator().manual_seed(2))
    final = model.num_exits - 1
    whole = head_policy(model, x, model.num_stages, PLAIN_NETWORK, offload=False).final
    assert whole.exit_index == final and calls == [final]
    reference = decode_exit(model(x)[-1])
    assert whole.collision_prob == pytest.approx(float(reference.collision_prob[0]))
    for split in range(1, model.num_stages):
        calls.clear()
        head = head_policy(model, x, split, PLAIN_NETWORK)
        assert head.final is None and head.provisional is None and calls == []
        (answer,) = tail_policy(model, head.activation, split, PLAIN_NETWORK)
        assert calls == [final] and answer == whole
    calls.clear()
    assert head_policy(model, x, model.num_stages, 2.0, offload=False).final.exit_index == final
    assert calls == list(range(model.num_exits))          # a finite threshold above 1 runs them all
