"""The early-exit obstacle-avoidance CNN: one readable definition.

A ResNet-style backbone is a list of *stages*: stage 0 is the stem, stage i > 0 is
residual block i. Every stage boundary is a candidate split point: split ``s``
means stages ``[0, s)`` run on the drone and ``[s, N)`` in the cloud, so split 0
offloads the raw frame and split N keeps everything on the drone.

Early exits sit after the stages whose cumulative backbone MACs are closest to the
spec's ``exit_fractions`` (SPINN places them at roughly 15 %..90 % of the FLOPs);
the final exit sits after the last stage. Exits and split points are derived from
the spec here, never listed by hand elsewhere.

Each exit predicts, DroNet-style, a collision class (2-way softmax: its top-1
probability is SPINN's confidence), steering bins (classification, used as an
auxiliary training target and to regularise the head) and a continuous steering
value in [-1, 1] (negative = turn left ... positive = turn right).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class ModelSpec:
    """Everything that defines the architecture; stored inside checkpoints."""

    name: str
    input_size: int = 128                      # square RGB input, pixels
    stem_channels: int = 24
    blocks: tuple[tuple[int, int], ...] = ((32, 2), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1))
    exit_fractions: tuple[float, ...] = (0.15, 0.3, 0.45, 0.6, 0.75, 0.9)
    head_channels: int = 16                    # 1x1 conv width inside each exit
    head_grid: tuple[int, int] = (2, 4)        # rows x cols kept by the exit pooling: "where" matters
    head_hidden: int = 64
    steering_bins: int = 5

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"unknown model spec fields: {sorted(unknown)}")
        d = dict(d)
        if "blocks" in d:
            d["blocks"] = tuple(tuple(b) for b in d["blocks"])
        for key in ("exit_fractions", "head_grid"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


def _scaled(spec_blocks, width: float):
    return tuple((int(round(c * width)), s) for c, s in spec_blocks)


#: The shipped sizes. "small" is DroNet-sized (tens of MMACs at 128 px) and trains on
#: this machine's CPU; "large" (hundreds of MMACs) is where offloading pays on a Jetson.
SPECS: dict[str, ModelSpec] = {
    "small": ModelSpec(name="small"),
    "large": ModelSpec(
        name="large",
        stem_channels=48,
        blocks=_scaled(((32, 2), (32, 1), (32, 1), (64, 2), (64, 1), (64, 1), (128, 2), (128, 1), (128, 1)), 2.5),
        head_channels=32,
        head_hidden=128,
    ),
}


class _Stem(nn.Module):
    def __init__(self, out_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(3, out_ch, 5, stride=2, padding=2, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x):
        return F.max_pool2d(F.relu(self.bn(self.conv(x))), 3, stride=2, padding=1)


class _ResBlock(nn.Module):
    """Two 3x3 convs with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.proj = None
        if stride != 1 or in_ch != out_ch:
            self.proj = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.proj is None else self.proj(x)))


class ExitHead(nn.Module):
    """1x1 conv -> coarse spatial pooling -> MLP -> [collision(2) | steering bins | steering]."""

    def __init__(self, in_ch: int, spec: ModelSpec):
        super().__init__()
        self.reduce = nn.Conv2d(in_ch, spec.head_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(spec.head_channels)
        self.grid = spec.head_grid
        flat = spec.head_channels * spec.head_grid[0] * spec.head_grid[1]
        self.fc1 = nn.Linear(flat, spec.head_hidden)
        self.fc2 = nn.Linear(spec.head_hidden, 2 + spec.steering_bins + 1)
        # collision logits are divided by it: fitted on the calib split (temperature scaling) so
        # the exit's confidence means its accuracy; 1 while training
        self.register_buffer("temperature", torch.ones(()))

    def forward(self, x):
        y = F.relu(self.bn(self.reduce(x)))
        y = F.adaptive_avg_pool2d(y, self.grid).flatten(1)
        y = self.fc2(F.relu(self.fc1(y)))
        # steering value squashed to [-1, 1]; collision logits calibrated, steering bin logits raw
        return torch.cat([y[:, :2] / self.temperature, y[:, 2:-1], torch.tanh(y[:, -1:])], dim=1)


@dataclass(frozen=True)
class ExitOutput:
    """One exit's decoded answer for a batch (tensors of shape (B,))."""

    collision_prob: torch.Tensor
    confidence: torch.Tensor      # top-1 softmax of the collision head
    steering: torch.Tensor
    steering_bin: torch.Tensor


def decode_exit(raw: torch.Tensor) -> ExitOutput:
    """Turn an exit's raw output row(s) into probabilities and steering."""
    coll = F.softmax(raw[:, :2], dim=1)
    return ExitOutput(
        collision_prob=coll[:, 1],
        confidence=coll.max(dim=1).values,
        steering=raw[:, -1],
        steering_bin=raw[:, 2:-1].argmax(dim=1),
    )


class EarlyExitNet(nn.Module):
    """Backbone stages + exits derived from a :class:`ModelSpec`."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        stages: list[nn.Module] = [_Stem(spec.stem_channels)]
        channels = [spec.stem_channels]
        in_ch = spec.stem_channels
        for out_ch, stride in spec.blocks:
            stages.append(_ResBlock(in_ch, out_ch, stride))
            channels.append(out_ch)
            in_ch = out_ch
        self.stages = nn.ModuleList(stages)
        self.stage_macs = _stage_macs(self.stages, spec.input_size)
        #: stage index after which each exit sits, ascending; the last is the final exit
        self.exit_stages: tuple[int, ...] = place_exits(self.stage_macs, spec.exit_fractions)
        self.exits = nn.ModuleList(ExitHead(channels[s], spec) for s in self.exit_stages)
        self.exit_macs = tuple(_module_macs(h, self.stage_shape(s)) for h, s in zip(self.exits, self.exit_stages))
        self._exit_of_stage = {s: i for i, s in enumerate(self.exit_stages)}

    # -- geometry ---------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def num_exits(self) -> int:
        return len(self.exits)

    def split_points(self) -> range:
        """Valid splits: 0 (offload the frame) .. num_stages (all on device)."""
        return range(self.num_stages + 1)

    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.spec.input_size, self.spec.input_size)

    def stage_shape(self, stage: int) -> tuple[int, int, int]:
        """(C, H, W) of the activation leaving ``stage`` (the input shape for -1)."""
        key = (self.spec, stage)
        if key not in _SHAPES_CACHE:        # traced once per spec: the cloud asks on every request
            _SHAPES_CACHE[key] = _trace_shape(self, stage)
        return _SHAPES_CACHE[key]

    def split_shape(self, split: int) -> tuple[int, int, int]:
        """Shape of the tensor crossing split point ``split``."""
        self.check_split(split)
        return self.stage_shape(split - 1)

    def exits_in(self, start: int, stop: int) -> list[int]:
        """Indices of exits whose stage lies in ``[start, stop)``."""
        return [i for i, s in enumerate(self.exit_stages) if start <= s < stop]

    def check_split(self, split: int) -> None:
        if not isinstance(split, int) or not 0 <= split <= self.num_stages:
            raise ValueError(f"split point must be an integer in [0, {self.num_stages}], got {split!r}")

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape():
            want = "x".join(map(str, self.input_shape()))
            raise ValueError(f"model '{self.spec.name}' expects input Bx{want}, got {tuple(x.shape)}")

    # -- execution ----------------------------------------------------------------
    def run_stage(self, stage: int, x: torch.Tensor) -> torch.Tensor:
        return self.stages[stage](x)

    def exit_index_at(self, stage: int) -> int | None:
        return self._exit_of_stage.get(stage)

    def run_exit(self, exit_index: int, activation: torch.Tensor) -> torch.Tensor:
        return self.exits[exit_index](activation)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All exits' raw outputs (training and reference evaluation)."""
        self.check_input(x)
        outs = []
        for stage in range(self.num_stages):
            x = self.run_stage(stage, x)
            e = self.exit_index_at(stage)
            if e is not None:
                outs.append(self.run_exit(e, x))
        return outs

    # -- cost ---------------------------------------------------------------------
    def total_macs(self) -> int:
        return sum(self.stage_macs) + sum(self.exit_macs)

    def macs_to_exit(self, exit_index: int) -> int:
        """MACs spent by a frame that leaves at ``exit_index`` (all earlier exits evaluated)."""
        stop = self.exit_stages[exit_index]
        return sum(self.stage_macs[: stop + 1]) + sum(self.exit_macs[: exit_index + 1])


_SHAPES_CACHE: dict = {}


def _trace_shape(net: EarlyExitNet, stage: int) -> tuple[int, int, int]:
    """Run a dummy input through the stages in eval mode: in training mode batch norm would
    fold the dummy into its running statistics."""
    x = torch.zeros(1, *net.input_shape())
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            for s in range(stage + 1):
                x = net.stages[s](x)
    finally:
        net.train(was_training)
    return tuple(x.shape[1:])


def _module_macs(module: nn.Module, in_shape: Sequence[int]) -> int:
    """Multiply-accumulates of conv and linear layers for one (C, H, W) input."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
            total += out.numel() * k
        elif isinstance(m, nn.Linear):
            total += out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(torch.zeros(1, *in_shape))
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()
    return total


def _stage_macs(stages: nn.ModuleList, input_size: int) -> tuple[int, ...]:
    macs, shape = [], (3, input_size, input_size)
    for stage in stages:
        macs.append(_module_macs(stage, shape))
        with torch.no_grad():
            was = stage.training
            stage.eval()
            shape = tuple(stage(torch.zeros(1, *shape)).shape[1:])
            stage.train(was)
    return tuple(macs)


def place_exits(stage_macs: Sequence[int], fractions: Sequence[float]) -> tuple[int, ...]:
    """Stage indices for exits at the given cumulative-MAC fractions, plus the final stage.

    Each fraction maps to the stage boundary whose cumulative share of backbone MACs is
    closest; duplicates collapse, and nothing lands on the final stage twice.
    """
    total = float(sum(stage_macs))
    cumulative, acc = [], 0
    for m in stage_macs:
        acc += m
        cumulative.append(acc / total)
    last = len(stage_macs) - 1
    chosen = {min(range(last), key=lambda s: abs(cumulative[s] - f)) for f in fractions if 0 < f < 1} if last else set()
    return tuple(sorted(chosen)) + (last,)


def build_model(spec: ModelSpec | str, seed: int | None = None) -> EarlyExitNet:
    """Instantiate a spec (or a shipped spec's name); ``seed`` makes weights reproducible."""
    if isinstance(spec, str):
        if spec not in SPECS:
            raise ValueError(f"unknown model size {spec!r}; choose one of {sorted(SPECS)}")
        spec = SPECS[spec]
    if seed is not None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            net = EarlyExitNet(spec)
    else:
        net = EarlyExitNet(spec)
    return net.eval()
