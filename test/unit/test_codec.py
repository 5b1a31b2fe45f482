"""The offload wire format: round trips, every rejection, fidelity through the model, fuzz.

Model-level checks run on seeded random stand-ins (random features with a fitted
collision readout, see ``bench.bench_codec.calibrate_random``) and procedural frames.
To run them against the trained model, set ``SPINN_CHECKPOINT`` (and ``SPINN_TEST_DATA``
for its test split); the helpers taking ``(net, frames)`` are importable as they are.
"""
from __future__ import annotations

import math
import os
import struct
import time
import zlib

import numpy as np
import pytest
import torch
import zstandard

from spinn_ros.core import codec
from spinn_ros.core.codec import (
    Codec,
    Dtype,
    ErrorCode,
    ErrorReply,
    Reply,
    WireError,
    decode_reply,
    decode_request,
    dequantize,
    encode_error,
    encode_reply,
    encode_request,
    error_reply_for,
    quantize,
)
from spinn_ros.core.model import build_model
from spinn_ros.testing.frames import labelled_frames, load_dataset
from spinn_ros.testing.models import (
    as_rgb8,
    load_model,
    model_input,
    policy_decisions,
    reference_pass,
    run_tail,
    split_exits,
    stand_in_model,
    wire_roundtrip,
)

torch.set_num_threads(1)

MODEL = "ckpt-0123456789abcdef"
SHAPES = {0: (3, 32, 32), 2: (32, 16, 16), 5: (8, 4, 4)}
THRESHOLD = 0.8          # policy exit threshold for the decision-agreement check
AGREEMENT = 0.99


def activation(shape=(32, 16, 16), seed=0) -> torch.Tensor:
    """Post-ReLU-like activation: half zeros, heavy-tailed positives."""
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(shape, generator=g)) ** 1.5


def rgb8(size=32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def request(x=None, *, dtype=Dtype.U8, cdc=Codec.LZ4, split=2, **kw) -> bytes:
    x = (rgb8() if dtype is Dtype.FRAME else activation()) if x is None else x
    fields = dict(request_id=42, model_id=MODEL, split=split, exit_threshold=0.8, dtype=dtype, codec=cdc,
                  budget_ms=50.0, sent_ns=123456789)
    return encode_request(x, **{**fields, **kw})


def decode(buf, **kw):
    return decode_request(buf, **{"expected_model_id": MODEL, "expected_shapes": SHAPES, **kw})


REPLY = Reply(request_id=42, exit_index=3, collision_prob=0.25, confidence=0.75, steering=-0.5, steering_bin=1,
              compute_ms=3.5, queue_ms=1.25, batch_size=4, sent_ns=123456789)


# -- frame surgery (the layout is the spec: docs/wire-format.md) ------------------------
def reseal(body: bytes) -> bytes:
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


def rebuild(frame: bytes, payload: bytes | None = None, **edits) -> bytes:
    """Re-pack a request frame with header fields replaced (by name) and/or a new payload,
    fixing the payload length and CRC, so the edit reaches the field checks."""
    fields = dict(zip(codec.REQUEST_FIELDS, codec._REQUEST.unpack_from(frame)))
    payload = frame[codec._REQUEST.size : -4] if payload is None else payload
    fields.update(payload_len=len(payload), **edits)
    return reseal(codec._REQUEST.pack(*fields.values()) + payload)


def rejects(code: ErrorCode, fn, *args, **kw) -> WireError:
    with pytest.raises(WireError) as info:
        fn(*args, **kw)
    assert info.value.code is code, f"expected {code.name}, got {info.value}"
    assert str(info.value).startswith(code.name.lower())
    return info.value


# -- round trips ------------------------------------------------------------------------
@pytest.mark.parametrize("cdc", list(Codec))
@pytest.mark.parametrize("dtype", list(Dtype))
def test_request_round_trip(dtype, cdc):
    split = 0 if dtype is Dtype.FRAME else 2
    x = rgb8() if dtype is Dtype.FRAME else activation()
    frame = request(x, dtype=dtype, cdc=cdc, split=split)
    req = decode(bytearray(frame))          # any buffer: bytes, bytearray, memoryview
    assert (req.request_id, req.model_id, req.split, req.dtype, req.codec) == (42, MODEL, split, dtype, cdc)
    assert (req.exit_threshold, req.budget_ms, req.sent_ns, req.wire_bytes) == (0.8, 50.0, 123456789, len(frame))
    assert req.deadline_ns == 123456789 + 50_000_000
    assert req.tensor.dtype == torch.float32 and tuple(req.tensor.shape) == SHAPES[split]
    if dtype is Dtype.FRAME:
        want = torch.from_numpy(x).permute(2, 0, 1).float() / 255
        assert torch.equal(req.tensor, want)
    elif dtype is Dtype.F32:
        assert torch.equal(req.tensor, x)
    elif dtype is Dtype.F16:
        assert torch.equal(req.tensor, x.half().float())
    else:
        assert (req.tensor - x).abs().max() <= req.scale / 2 * (1 + 1e-5)


def test_request_accepts_batch_of_one_and_memoryview():
    x = activation()
    req = decode(memoryview(request(x[None], dtype=Dtype.F32)))
    assert torch.equal(req.tensor, x)


def test_compression_pays_on_sparse_activations():
    sizes = {c: len(request(activation(), cdc=c)) for c in Codec}
    assert sizes[Codec.LZ4] < sizes[Codec.NONE] and sizes[Codec.ZSTD] < sizes[Codec.NONE]
    assert len(request(dtype=Dtype.F32, cdc=Codec.NONE)) == codec._REQUEST.size + 32 * 16 * 16 * 4 + 4


def test_reply_and_error_round_trip():
    assert decode_reply(encode_reply(REPLY), num_exits=7) == REPLY
    err = decode_reply(encode_error(ErrorCode.DEADLINE_EXCEEDED, "late by 3 ms", request_id=9))
    assert err == ErrorReply(ErrorCode.DEADLINE_EXCEEDED, "late by 3 ms", 9)
    anon = decode_reply(encode_error(ErrorCode.BAD_MAGIC, "€" * 2000))
    assert anon.request_id is None and len(anon.message.encode()) <= codec.MAX_ERROR_MESSAGE
    assert set(anon.message) == {"€"}         # truncated on a character boundary
    newer = decode_reply(encode_error(999, "a code from a newer server"))
    assert newer.code == 999


def test_error_reply_for_a_rejected_frame_names_the_request():
    exc = rejects(ErrorCode.WRONG_MODEL, decode, request(model_id="other-model"))
    reply = decode_reply(error_reply_for(exc))
    assert (reply.code, reply.request_id) == (ErrorCode.WRONG_MODEL, 42)
    assert "other-model" in reply.message and MODEL in reply.message


# -- quantisation -----------------------------------------------------------------------
@pytest.mark.parametrize("value", [0.0, 3.25, -7.5, 1e-30, 1e38, -1e38])
def test_quantize_constant_tensors_exactly(value):
    x = torch.full((4, 5, 6), value)
    q, scale, zp = quantize(x)
    assert scale > 0 and 0 <= zp <= 255
    np.testing.assert_allclose(dequantize(q, scale, zp), x.numpy(), rtol=1e-6)


@pytest.mark.parametrize("lo,hi", [(0.0, 1.0), (-1.0, 1.0), (-5.0, -1.0), (2.0, 3.0), (-1e-3, 1e3), (-3e38, 3e38)])
def test_quantize_error_is_half_a_step(lo, hi):
    x = torch.linspace(lo, hi, 10_001, dtype=torch.float64).float()
    q, scale, zp = quantize(x)
    back = dequantize(q, scale, zp)
    assert np.isfinite(back).all()
    assert np.abs(back.astype(np.float64) - x.double().numpy()).max() <= scale * (0.5 + 1e-4)
    assert q.min() == 0 or q.max() == 255     # the whole code range is used
    if lo <= 0 <= hi:
        assert dequantize(np.array([zp], np.uint8), scale, zp)[0] == 0.0   # zero is exact


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_rejected_on_encode(bad):
    x = activation().clone()
    x[1, 2, 3] = bad
    rejects(ErrorCode.NON_FINITE, quantize, x)
    for dtype in (Dtype.U8, Dtype.F16, Dtype.F32):
        rejects(ErrorCode.NON_FINITE, request, x, dtype=dtype)


def test_float16_overflow_is_rejected():
    rejects(ErrorCode.NON_FINITE, request, activation() * 1e6, dtype=Dtype.F16)


# -- rejections -------------------------------------------------------------------------
def test_framing_rejections():
    good = request()
    rejects(ErrorCode.TRUNCATED, decode, good[:-1])
    rejects(ErrorCode.TRUNCATED, decode, good[:10])
    rejects(ErrorCode.TRUNCATED, decode, b"")
    rejects(ErrorCode.BAD_MAGIC, decode, b"XPNN" + good[4:])
    rejects(ErrorCode.BAD_MAGIC, decode, b"SQ")
    rejects(ErrorCode.UNSUPPORTED_VERSION, decode, rebuild(good, version=2))
    rejects(ErrorCode.UNKNOWN_KIND, decode, rebuild(good, kind=9))
    rejects(ErrorCode.WRONG_KIND, decode, encode_reply(REPLY))
    rejects(ErrorCode.WRONG_KIND, decode_reply, request(activation(SHAPES[5]), split=5))
    rejects(ErrorCode.OVERSIZE, decode, good, max_bytes=len(good) - 1)
    rejects(ErrorCode.OVERSIZE, decode, good[:16] + struct.pack("<I", 1 << 31) + good[20:])
    rejects(ErrorCode.LENGTH_MISMATCH, decode, good + b"\0")
    flipped = bytearray(good)
    flipped[-10] ^= 0x10
    rejects(ErrorCode.CHECKSUM_MISMATCH, decode, bytes(flipped))


def test_pre_checksum_errors_carry_no_request_id():
    assert rejects(ErrorCode.CHECKSUM_MISMATCH, decode, request()[:-1] + b"\0").request_id is None
    assert rejects(ErrorCode.TRUNCATED, decode, request()[:-1]).request_id is None


def test_field_rejections():
    good = request()
    cases = {
        ErrorCode.WRONG_MODEL: [request(model_id="someone-else")],
        ErrorCode.SPLIT_OUT_OF_RANGE: [rebuild(good, split=3), rebuild(good, split=255)],
        ErrorCode.SHAPE_MISMATCH: [rebuild(good, c=31), request(activation((3, 32, 32)), split=2),
                                   rebuild(good, split=5)],
        ErrorCode.BAD_DTYPE: [rebuild(good, dtype=0), rebuild(good, dtype=200),
                              rebuild(good, dtype=Dtype.FRAME, scale=0.0, zero_point=0)],   # a frame at split 2
        ErrorCode.BAD_CODEC: [rebuild(good, codec=3)],
        ErrorCode.BAD_QUANTIZATION: [rebuild(good, scale=0.0), rebuild(good, scale=-1.0), rebuild(good, scale=math.nan),
                                     rebuild(good, scale=math.inf), rebuild(good, scale=1e37),
                                     rebuild(request(dtype=Dtype.F32), scale=0.5),
                                     rebuild(request(dtype=Dtype.F16), zero_point=3)],
        ErrorCode.BAD_FIELD: [rebuild(good, flags=1), rebuild(good, exit_threshold=math.nan),
                              rebuild(good, exit_threshold=-0.1), rebuild(good, budget_ms=math.inf),
                              rebuild(good, budget_ms=-1.0)],
        ErrorCode.LENGTH_MISMATCH: [rebuild(request(dtype=Dtype.F32, cdc=Codec.NONE),
                                            payload=bytes(32 * 16 * 16 * 4 - 4))],
        ErrorCode.DECOMPRESSION_FAILED: [
            rebuild(good, payload=b"\xff" * 64),                                        # corrupt lz4
            rebuild(good, payload=codec.lz4.block.compress(bytes(100), store_size=False)),  # too short
            rebuild(good, payload=codec.lz4.block.compress(bytes(9000), store_size=False)),  # too long
            rebuild(good, codec=Codec.ZSTD, payload=b"\x28\xb5\x2f\xfd" + bytes(20)),  # corrupt zstd
            rebuild(good, codec=Codec.ZSTD,
                    payload=zstandard.ZstdCompressor(write_content_size=False).compress(bytes(8192))),
            rebuild(good, codec=Codec.ZSTD, payload=zstandard.ZstdCompressor().compress(bytes(8191))),
        ],
        ErrorCode.NON_FINITE: [rebuild(request(dtype=Dtype.F32, cdc=Codec.NONE),
                                       payload=np.full(32 * 16 * 16, np.nan, np.float32).tobytes()),
                               rebuild(request(dtype=Dtype.F16, cdc=Codec.NONE),
                                       payload=np.full(32 * 16 * 16, np.inf, np.float16).tobytes())],
    }
    for code, frames in cases.items():
        for frame in frames:
            exc = rejects(code, decode, frame)
            assert exc.request_id == 42           # after the checksum: the cloud can answer it


def test_decompression_bomb_is_refused_before_decompressing():
    # a zstd frame declaring a 1 GiB tensor: refused from its header alone
    bomb = zstandard.ZstdCompressor().compress(bytes(1 << 20))
    rejects(ErrorCode.DECOMPRESSION_FAILED, decode, rebuild(request(), codec=Codec.ZSTD, payload=bomb))
    # a shape whose tensor exceeds the cap, even if the server claims to serve it
    huge = {**SHAPES, 2: (60000, 60000, 60000)}
    frame = rebuild(request(), c=60000, h=60000, w=60000)
    rejects(ErrorCode.OVERSIZE, decode, frame, expected_shapes=huge)


def test_reply_rejections():
    good = encode_reply(REPLY)
    for field, value in [("collision_prob", 1.5), ("confidence", math.nan), ("steering", -1.01),
                         ("compute_ms", -1.0), ("queue_ms", math.inf), ("batch_size", 0)]:
        bad = Reply(**{**{f: getattr(REPLY, f) for f in REPLY.__slots__}, field: value})
        rejects(ErrorCode.BAD_FIELD, encode_reply, bad)
    rejects(ErrorCode.BAD_FIELD, decode_reply, good, num_exits=3)
    rejects(ErrorCode.BAD_FIELD, encode_reply, Reply(**{**{f: getattr(REPLY, f) for f in REPLY.__slots__},
                                                       "exit_index": 300}))
    rejects(ErrorCode.TRUNCATED, decode_reply, good[:-3])
    rejects(ErrorCode.OVERSIZE, decode_reply, request(dtype=Dtype.F32))


def test_probe_reply_round_trip_at_the_size_asked_for():
    for size in (0, 16, codec.PROBE_REPLY_MIN_BYTES, 16_384):
        frame = codec.encode_probe_reply(123_456_789_012, size)
        assert len(frame) == max(size, codec.PROBE_REPLY_MIN_BYTES)
        assert codec.decode_probe_reply(frame, max_bytes=1 << 20) == 123_456_789_012


def test_probe_reply_rejections():
    good = codec.encode_probe_reply(7, 256)
    rejects(ErrorCode.BAD_MAGIC, codec.decode_probe_reply, bytes(256), max_bytes=1024)       # an old cloud's zeros
    rejects(ErrorCode.WRONG_KIND, codec.decode_probe_reply, encode_reply(REPLY), max_bytes=1024)
    rejects(ErrorCode.WRONG_KIND, decode_reply, good)                                           # not a tail's answer
    rejects(ErrorCode.OVERSIZE, codec.decode_probe_reply, good, max_bytes=100)
    rejects(ErrorCode.TRUNCATED, codec.decode_probe_reply, good[:-1], max_bytes=1024)
    padded = bytearray(good[:-4])
    padded[40] = 1                                                                              # padding must be zeros
    rejects(ErrorCode.BAD_FIELD, codec.decode_probe_reply, codec._seal(bytes(padded[:28]), bytes(padded[28:])),
            max_bytes=1024)
    rejects(ErrorCode.BAD_FIELD, codec.encode_probe_reply, -1, 64)                              # no negative clock


def test_encode_rejects_bad_arguments():
    rejects(ErrorCode.BAD_FIELD, request, model_id="x" * 33)
    rejects(ErrorCode.BAD_FIELD, request, model_id="")
    rejects(ErrorCode.BAD_FIELD, request, request_id=-1)
    rejects(ErrorCode.BAD_FIELD, request, split=256)
    rejects(ErrorCode.BAD_FIELD, request, exit_threshold=math.nan)
    rejects(ErrorCode.BAD_FIELD, request, budget_ms=1e39)
    rejects(ErrorCode.BAD_DTYPE, request, activation(), dtype=Dtype.FRAME, split=0)
    rejects(ErrorCode.BAD_DTYPE, request, rgb8(), dtype=Dtype.FRAME, split=2)
    rejects(ErrorCode.SHAPE_MISMATCH, request, torch.zeros(2, 32, 16, 16))


def test_split_shapes_cover_every_offloadable_split():
    net = build_model("small", seed=0)
    shapes = codec.split_shapes(net)
    assert sorted(shapes) == list(range(net.num_stages))      # all but "everything on the drone"
    assert all(shapes[s] == net.split_shape(s) for s in shapes)


def test_encode_decode_is_fast():
    x = activation()
    frame = request(x)
    for _ in range(20):
        decode(request(x))
    samples = []
    for _ in range(200):
        t0 = time.perf_counter()
        decode(request(x))
        samples.append(time.perf_counter() - t0)
    assert np.median(samples) < 1e-3, f"u8+lz4 encode+decode of 32x16x16 takes {np.median(samples) * 1e3:.2f} ms"
    assert len(frame) < 32 * 16 * 16


# -- through the model ------------------------------------------------------------------
def exact_through_wire(net, model_id: str, frames: np.ndarray, dtype: Dtype, cdc: Codec) -> None:
    """Head -> wire -> tail reproduces every exit of the whole model bit for bit at every split."""
    x = model_input(frames, net)
    ref = reference_pass(net, x)
    shapes = codec.split_shapes(net)
    for split in shapes:
        source = as_rgb8(x) if dtype is Dtype.FRAME else ref.crossing[split]
        decoded, *_ = wire_roundtrip(source, split, dtype, cdc, model_id, shapes)
        exits = split_exits(net, ref, run_tail(net, decoded, split), split)
        assert len(exits) == net.num_exits
        for i, (got, want) in enumerate(zip(exits, ref.exits)):
            assert torch.equal(got, want), f"split {split}: exit {i} differs after the wire"
        if dtype is Dtype.FRAME:
            break                   # a frame only crosses split 0


def decision_agreement(net, model_id: str, frames: np.ndarray, threshold: float = THRESHOLD,
                       cdc: Codec = Codec.LZ4) -> dict[int, float]:
    """{split: share of frames whose policy decision (collision class at the answering
    exit) is the same with 8-bit activations as at full precision}."""
    ref = reference_pass(net, model_input(frames, net))
    _, want = policy_decisions(ref.exits, threshold)
    shapes = codec.split_shapes(net)
    agreement = {}
    for split in shapes:
        decoded, *_ = wire_roundtrip(ref.crossing[split], split, Dtype.U8, cdc, model_id, shapes)
        _, got = policy_decisions(split_exits(net, ref, run_tail(net, decoded, split), split), threshold)
        agreement[split] = (got == want).float().mean().item()
    return agreement


def trained_or_stand_in(size: str):
    """(net, model id, frames): the trained model and test split when SPINN_CHECKPOINT /
    SPINN_TEST_DATA are set, else a calibrated stand-in and procedural frames."""
    ckpt, data = os.environ.get("SPINN_CHECKPOINT"), os.environ.get("SPINN_TEST_DATA")
    net, model_id = load_model(size, 0, ckpt) if ckpt else stand_in_model(size, seed=0, calibration_frames=128)
    frames = load_dataset(data, 300)[0] if data else labelled_frames(300, net.spec.input_size, seed=1)[0]
    return net, model_id, frames


def test_policy_helper_matches_the_system_policy():
    from spinn_ros.core.progressive import reference_decision

    net, _ = stand_in_model("small", seed=0, calibration_frames=64)
    x = model_input(labelled_frames(12, net.spec.input_size, seed=4)[0], net)
    for threshold in (0.6, 0.8, 0.95):
        answer, collision = policy_decisions(reference_pass(net, x).exits, threshold)
        want = [reference_decision(net, x[i : i + 1], threshold) for i in range(len(x))]
        assert answer.tolist() == [d.exit_index for d in want]
        assert collision.tolist() == [int(d.collision_prob > 0.5) for d in want]


@pytest.mark.parametrize("size", ["small", "large"])
def test_full_precision_through_wire_is_exact(size):
    net = build_model(size, seed=1)
    frames = labelled_frames(3, net.spec.input_size, seed=2)[0]
    exact_through_wire(net, f"random-{size}", frames, Dtype.F32, Codec.NONE)


@pytest.mark.parametrize("dtype,cdc", [(Dtype.F32, Codec.LZ4), (Dtype.F32, Codec.ZSTD), (Dtype.FRAME, Codec.LZ4)])
def test_lossless_configs_through_wire_are_exact(dtype, cdc):
    net = build_model("small", seed=1)
    exact_through_wire(net, "random-small", labelled_frames(2, net.spec.input_size, seed=3)[0], dtype, cdc)


def test_quantised_decisions_agree():
    net, model_id, frames = trained_or_stand_in("small")
    agreement = decision_agreement(net, model_id, frames)
    worst = min(agreement, key=agreement.get)
    assert agreement[worst] >= AGREEMENT, f"split {worst}: decisions agree on {agreement[worst]:.1%} only ({agreement})"


# -- fuzz -------------------------------------------------------------------------------
def fuzz_frames(rng: np.random.Generator, n: int):
    """n hostile frames: mutations of valid frames of every kind, dtype and codec (bit
    flips, truncations, extensions, header edits and payload swaps with a fixed CRC)
    and plain random bytes."""
    seeds = [request(dtype=d, cdc=c, split=0 if d is Dtype.FRAME else s, x=None if d is Dtype.FRAME else
                     activation(SHAPES[s], seed=s)) for d in Dtype for c in Codec for s in (2, 5)]
    seeds += [encode_reply(REPLY), encode_error(ErrorCode.INTERNAL, "boom", 7), encode_error(ErrorCode.OVERSIZE, "x")]
    floats = [math.nan, math.inf, -math.inf, -1.0, 0.0, 1e-45, 0.5, 1.0, 2.0, 1e38]
    for i in range(n):
        base = bytearray(seeds[rng.integers(len(seeds))])
        kind = i % 8
        if kind == 0:           # bit flips
            for pos in rng.integers(0, len(base) * 8, rng.integers(1, 9)):
                base[pos // 8] ^= 1 << (pos % 8)
            yield bytes(base)
        elif kind == 1:         # truncation
            yield bytes(base[: rng.integers(0, len(base))])
        elif kind == 2:         # extension
            yield bytes(base) + rng.bytes(int(rng.integers(1, 64)))
        elif kind == 3:         # random header bytes, CRC fixed
            for pos in rng.integers(0, min(len(base) - 4, codec._REQUEST.size), rng.integers(1, 5)):
                base[pos] = rng.integers(256)
            yield reseal(base[:-4])
        elif kind == 4 and base[5] == codec.Kind.REQUEST:   # one typed field edit, CRC fixed
            fields = list(codec._REQUEST.unpack_from(base))
            j = int(rng.integers(1, len(fields)))
            if isinstance(fields[j], float):
                fields[j] = floats[rng.integers(len(floats))]
            elif isinstance(fields[j], int):
                fields[j] = int(rng.choice([0, 1, 2, 3, 4, 5, 255, fields[j] + 1, max(fields[j] - 1, 0)]))
            else:
                fields[j] = rng.bytes(len(fields[j]))
            try:
                yield reseal(codec._REQUEST.pack(*fields) + bytes(base[codec._REQUEST.size : -4]))
            except struct.error:
                yield bytes(base)
        elif kind == 5 and base[5] == codec.Kind.REQUEST:   # payload swapped for junk, CRC fixed
            size = len(base) - codec._REQUEST.size - 4 if rng.random() < 0.5 else int(rng.integers(0, 2 * len(base)))
            yield rebuild(bytes(base), payload=rng.bytes(size))
        elif kind == 6:         # random bytes behind a valid prefix
            yield bytes(base[:6]) + rng.bytes(int(rng.integers(0, 200)))
        else:                   # pure noise
            yield rng.bytes(int(rng.integers(0, 300)))


def test_fuzzed_frames_get_an_error_reply_each():
    rng = np.random.default_rng(2024)
    outcomes, codes = {"ok": 0, "rejected": 0}, set()
    t0 = time.perf_counter()
    for frame in fuzz_frames(rng, 5000):
        for decoder in (decode, decode_reply):
            try:
                decoder(frame)
                outcomes["ok"] += 1
            except WireError as exc:     # anything else fails the test
                outcomes["rejected"] += 1
                codes.add(exc.code)
                reply = decode_reply(error_reply_for(exc))
                assert isinstance(reply, ErrorReply) and reply.code is exc.code
    elapsed = time.perf_counter() - t0
    assert outcomes["rejected"] > 9000 and elapsed < 20, (outcomes, elapsed)
    assert len(codes) >= 15, sorted(c.name for c in codes)     # the fuzz reaches deep checks
