"""The offload wire format: one versioned, checksummed binary frame per message.

(Over 450 lines on purpose: the format, its limits and every check on it stay in one file, so
that a reader sees the whole wire contract at once; docs/wire-format.md describes the same.)

The drone sends a *request* (the activation crossing a split point, quantised and
compressed); the cloud answers with a *reply* (which exit answered and its outputs,
plus server timings) or an *error reply* naming what was wrong. The layout is
documented field by field in ``docs/wire-format.md``; the structs below are its
single source of truth.

Every frame is ``header | payload | crc32``: the header is a fixed little-endian
struct per message kind, the CRC32 trailer covers everything before it. Decoders
accept any byte string and raise nothing but :class:`WireError`, whose ``code``
names the problem, so the cloud can answer every bad frame with an error reply.
"""
from __future__ import annotations

import enum
import math
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Mapping

import lz4.block
import numpy as np
import torch
import zstandard

from spinn_ros.core.encodings import WIRE_ENCODINGS
from spinn_ros.core.preprocess import to_model_input

MAGIC = b"SPNN"
VERSION = 1
MODEL_ID_BYTES = 32              # the checkpoint hash string, NUL-padded
MAX_REQUEST_BYTES = 4 << 20      # default cap on a whole request frame
MAX_REPLY_BYTES = 4096           # replies are tiny; error messages are capped below
MAX_ERROR_MESSAGE = 1024         # bytes of UTF-8 in an error reply
MAX_TENSOR_BYTES = 64 << 20      # decompression-bomb cap, checked before decompressing
ZSTD_LEVEL = 1                   # level 3+ buys <2 % on activations at 1.5-5x the time
_F32_MAX = float(np.finfo(np.float32).max)
_F16_INF = 65520.0               # float16 rounds |x| >= this to Inf


class Kind(enum.IntEnum):
    REQUEST = 1
    REPLY = 2
    ERROR = 3
    PROBE_REPLY = 4     # the cloud's answer to a link probe (transport/zenoh_link.py)


class Dtype(enum.IntEnum):
    """How the payload's numbers are stored."""

    F32 = 1     # little-endian float32, C x H x W
    F16 = 2     # little-endian float16, C x H x W
    U8 = 3      # 8-bit asymmetric linear quantisation: x = (q - zero_point) * scale
    FRAME = 4   # split 0 only: the H x W x 3 rgb8 camera frame, decoded by the shared preprocess


class Codec(enum.IntEnum):
    NONE = 0
    LZ4 = 1     # LZ4 block, no size prefix (the shape gives the size)
    ZSTD = 2    # one zstd frame that records its content size


def parse_encoding(name: str) -> tuple[Dtype, Codec]:
    """An encoding name (encodings.WIRE_ENCODINGS) -> its wire enums: 'u8-lz4' -> (Dtype.U8, Codec.LZ4).
    Split 0 ships the camera frame itself (Dtype.FRAME) whatever the name: see wire_payload."""
    if name not in WIRE_ENCODINGS:
        raise ValueError(f"unknown encoding {name!r}; choose one of {', '.join(WIRE_ENCODINGS)}")
    dtype, compression = name.split("-")
    return Dtype[dtype.upper()], Codec[compression.upper()]


def input_as_frames(x: torch.Tensor) -> np.ndarray:
    """Model input (B, 3, S, S) in [0, 1] -> (B, S, S, 3) rgb8 frames: what split 0 (the
    cloud-only path) ships, the model-sized camera frame itself (exact for S x S frames)."""
    return x.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def wire_payload(act, split: int, dtype: Dtype) -> tuple[Dtype, object]:
    """(dtype, payload) the drone encodes at ``split``: the activation as it is, except at split 0,
    where it is the model-sized frame (Dtype.FRAME) whatever the encoding's dtype."""
    if split == 0:
        return Dtype.FRAME, input_as_frames(act)[0]
    return dtype, act


class ErrorCode(enum.IntEnum):
    """Machine-readable reasons; the numbers travel in error replies and never change."""

    TRUNCATED = 1
    BAD_MAGIC = 2
    UNSUPPORTED_VERSION = 3
    UNKNOWN_KIND = 4
    WRONG_KIND = 5
    OVERSIZE = 6
    LENGTH_MISMATCH = 7
    CHECKSUM_MISMATCH = 8
    WRONG_MODEL = 9
    SPLIT_OUT_OF_RANGE = 10
    SHAPE_MISMATCH = 11
    BAD_DTYPE = 12
    BAD_CODEC = 13
    BAD_QUANTIZATION = 14
    DECOMPRESSION_FAILED = 15
    NON_FINITE = 16
    BAD_FIELD = 17
    # service-level reasons the cloud may answer with; never raised by this module
    DEADLINE_EXCEEDED = 64
    OVERLOADED = 65
    INTERNAL = 66


class WireError(ValueError):
    """A frame (or a value to encode) that breaks the format.

    ``request_id`` is set only once the checksum has vouched for the header, so an
    error reply never names a request id that corruption invented.
    """

    def __init__(self, code: ErrorCode, message: str, request_id: int | None = None):
        super().__init__(f"{code.name.lower()}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id


# -- layout ---------------------------------------------------------------------------
# prefix shared by every kind: magic, version, kind, flags, request id, payload length
_PREFIX = struct.Struct("<4sBBHQI")
# request: sent_ns, exit threshold (float64: the tail compares exactly what the drone
# would), model id, scale, budget ms, C, H, W, split, dtype, codec, zero point, and 2
# pad bytes so the payload starts 8-aligned (offset 88)
_REQUEST = struct.Struct(_PREFIX.format + "Qd32sffHHHBBBB2x")
REQUEST_FIELDS = ("magic", "version", "kind", "flags", "request_id", "payload_len", "sent_ns", "exit_threshold",
                  "model_id", "scale", "budget_ms", "c", "h", "w", "split", "dtype", "codec", "zero_point")
# reply: sent_ns (echoed), collision prob, confidence, steering, compute ms, queue ms,
# batch size, global exit index, steering bin
_REPLY = struct.Struct(_PREFIX.format + "QfffffHBB")
# error: error code, 2 pad bytes; the UTF-8 message is the payload
_ERROR = struct.Struct(_PREFIX.format + "H2x")
# probe reply: received_ns (the cloud's monotonic clock when the probe arrived: only the
# differences between one train's replies mean anything); zero padding to the size asked for
_PROBE_REPLY = struct.Struct(_PREFIX.format + "Q")
_CRC = struct.Struct("<I")
_HEADERS = {Kind.REQUEST: _REQUEST, Kind.REPLY: _REPLY, Kind.ERROR: _ERROR, Kind.PROBE_REPLY: _PROBE_REPLY}
#: the smallest probe reply (no padding)
PROBE_REPLY_MIN_BYTES = _PROBE_REPLY.size + _CRC.size
FLAG_HAS_REQUEST_ID = 1          # error replies only: the request id field is meaningful

_NP_DTYPE = {Dtype.F32: np.dtype("<f4"), Dtype.F16: np.dtype("<f2"), Dtype.U8: np.dtype("u1"), Dtype.FRAME: np.dtype("u1")}


# -- messages -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Request:
    request_id: int
    model_id: str
    split: int
    dtype: Dtype
    codec: Codec
    shape: tuple[int, int, int]      # (C, H, W) crossing the split
    scale: float                     # U8 only; 0 otherwise
    zero_point: int                  # U8 only; 0 otherwise
    exit_threshold: float            # confidence threshold the tail applies at its exits
    sent_ns: int                     # drone wall clock (ns since the epoch) when sent
    budget_ms: float                 # latency budget from sent_ns; 0 = none
    tensor: torch.Tensor             # float32 (C, H, W), ready for the tail
    wire_bytes: int                  # size of the frame it came in

    @property
    def deadline_ns(self) -> int | None:
        """Wall-clock time after which the answer is useless to the drone (None: no budget)."""
        return None if self.budget_ms == 0 else self.sent_ns + int(self.budget_ms * 1e6)


@dataclass(frozen=True, slots=True)
class Reply:
    request_id: int
    exit_index: int                  # global exit index that answered
    collision_prob: float
    confidence: float
    steering: float
    steering_bin: int
    compute_ms: float                # server time running the tail (its share of the batch)
    queue_ms: float                  # server time from arrival to the batch starting
    batch_size: int                  # requests in the batch this one ran in
    sent_ns: int = 0                 # the request's sent_ns, echoed for round-trip timing


@dataclass(frozen=True, slots=True)
class ErrorReply:
    code: ErrorCode | int            # int for codes newer than this decoder
    message: str
    request_id: int | None


# -- quantisation ---------------------------------------------------------------------
def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _finite_range(a: np.ndarray, rid: int | None = None) -> tuple[float, float]:
    """(min, max) of a float array; NaN or Inf anywhere makes one of them non-finite,
    which is cheaper than an isfinite pass."""
    if a.size == 0:
        raise WireError(ErrorCode.SHAPE_MISMATCH, "empty tensor", rid)
    lo, hi = float(a.min()), float(a.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise WireError(ErrorCode.NON_FINITE, f"tensor holds NaN or Inf (range {lo}..{hi})", rid)
    return lo, hi


def _quant_params(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric 8-bit (scale, zero_point) for values in [lo, hi].

    The range always includes 0 so zeros (most post-ReLU activations) stay exact
    and compress well; a constant tensor then still gets a usable, positive scale.
    """
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = float(np.float32((hi - lo) / 255.0))
    if scale == 0.0:            # all zeros (or a range below float32 resolution)
        scale = float(np.finfo(np.float32).tiny) if hi > lo else 1.0
    zero_point = int(min(255, max(0, round(-lo / scale))))
    return scale, zero_point


def quantize(x) -> tuple[np.ndarray, float, int]:
    """float tensor -> (uint8 array of the same shape, scale, zero_point); rejects NaN/Inf."""
    a = _as_numpy(x)
    scale, zero_point = _quant_params(*_finite_range(a))
    q = np.divide(a, np.float32(scale), dtype=np.float32)
    np.rint(q, out=q)
    q += np.float32(zero_point)
    np.clip(q, 0, 255, out=q)      # rounding can land half a step outside [0, 255]
    return q.astype(np.uint8), scale, zero_point


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """uint8 array -> float32 array: (q - zero_point) * scale."""
    out = q.astype(np.float32)
    out -= np.float32(zero_point)
    out *= np.float32(scale)
    return out


# -- compression ----------------------------------------------------------------------
_local = threading.local()   # zstd contexts are not thread-safe and cost ~10 us to build


def _zstd_compressor() -> zstandard.ZstdCompressor:
    if not hasattr(_local, "zc"):
        _local.zc = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
    return _local.zc


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_local, "zd"):
        _local.zd = zstandard.ZstdDecompressor()
    return _local.zd


def _compress(codec: Codec, raw: memoryview):
    if codec is Codec.LZ4:
        return lz4.block.compress(raw, store_size=False)
    if codec is Codec.ZSTD:
        return _zstd_compressor().compress(raw)
    return raw


def _decompress(codec: Codec, payload: memoryview, raw_size: int, request_id: int) -> bytearray:
    """Payload -> a writable buffer of exactly ``raw_size`` bytes (writable so numpy and
    torch can wrap it without another copy). Only ever allocates ``raw_size`` (capped by
    the caller), whatever the compressed stream claims."""
    def fail(why: str):
        return WireError(ErrorCode.DECOMPRESSION_FAILED, f"{codec.name.lower()} payload: {why}", request_id)

    if codec is Codec.NONE:
        if len(payload) != raw_size:
            raise WireError(ErrorCode.LENGTH_MISMATCH,
                            f"payload is {len(payload)} bytes, the shape needs {raw_size}", request_id)
        return bytearray(payload)
    # third-party decoders raise assorted exception types on hostile input
    try:
        if codec is Codec.LZ4:
            raw = lz4.block.decompress(payload, uncompressed_size=raw_size, return_bytearray=True)
        else:
            declared = zstandard.frame_content_size(payload)
            if declared != raw_size:    # also rejects frames without a content size (-1)
                raise fail(f"frame declares {declared} bytes, the shape needs {raw_size}")
            raw = bytearray(_zstd_decompressor().decompress(payload, max_output_size=raw_size))
    except WireError:
        raise
    except Exception as exc:  # noqa: BLE001 - see above
        raise fail(str(exc) or type(exc).__name__) from None
    if len(raw) != raw_size:
        raise fail(f"decompressed to {len(raw)} bytes, the shape needs {raw_size}")
    return raw


# -- framing --------------------------------------------------------------------------
def _pack(st: struct.Struct, *fields) -> bytes:
    try:
        return st.pack(*fields)
    except (struct.error, OverflowError) as exc:    # a number out of its field's range
        raise WireError(ErrorCode.BAD_FIELD, f"value does not fit the header: {exc}") from None


def _seal(header: bytes, payload=b"") -> bytes:
    """header | payload | crc32(header | payload), with a single copy of the payload."""
    crc = zlib.crc32(payload, zlib.crc32(header))
    return b"".join((header, payload, _CRC.pack(crc)))


def _open(buf, kinds: tuple[Kind, ...], max_bytes: int) -> tuple[tuple, memoryview]:
    """Check the framing of ``buf`` (size, magic, version, kind, lengths, CRC) and return
    the header's fields and the payload view. Field values are not checked here."""
    try:
        mv = memoryview(buf).cast("B")
    except (TypeError, ValueError) as exc:
        raise WireError(ErrorCode.BAD_FIELD, f"not a contiguous byte buffer: {exc}") from None
    n = len(mv)
    if n > max_bytes:
        raise WireError(ErrorCode.OVERSIZE, f"frame is {n} bytes, the limit is {max_bytes}")
    if bytes(mv[:4]) != MAGIC[: min(n, 4)]:
        raise WireError(ErrorCode.BAD_MAGIC, f"starts with {bytes(mv[:4])!r}, expected {MAGIC!r}")
    if n < _PREFIX.size:
        raise WireError(ErrorCode.TRUNCATED, f"{n} bytes is shorter than the {_PREFIX.size}-byte prefix")
    _, version, kind, _, _, payload_len = _PREFIX.unpack_from(mv)
    if version != VERSION:
        raise WireError(ErrorCode.UNSUPPORTED_VERSION, f"version {version}, this decoder speaks {VERSION}")
    kind = _enum(Kind, kind, ErrorCode.UNKNOWN_KIND, None)
    if kind not in kinds:
        want = " or ".join(k.name.lower() for k in kinds)
        raise WireError(ErrorCode.WRONG_KIND, f"expected a {want} frame, got a {kind.name.lower()}")
    header = _HEADERS[kind]
    if payload_len > max_bytes:
        raise WireError(ErrorCode.OVERSIZE, f"declared payload of {payload_len} bytes exceeds {max_bytes}")
    total = header.size + payload_len + _CRC.size
    if n < total:
        raise WireError(ErrorCode.TRUNCATED, f"{n} bytes, the header declares a {total}-byte frame")
    if n > total:
        raise WireError(ErrorCode.LENGTH_MISMATCH, f"{n - total} bytes after the declared {total}-byte frame")
    (crc,) = _CRC.unpack_from(mv, n - _CRC.size)
    if zlib.crc32(mv[: n - _CRC.size]) != crc:
        raise WireError(ErrorCode.CHECKSUM_MISMATCH, "CRC32 over header and payload does not match")
    return header.unpack_from(mv), mv[header.size : n - _CRC.size]


def _enum(cls, value: int, code: ErrorCode, request_id: int | None):
    """``cls(value)``, or a WireError with ``code`` for a value the enum does not know."""
    try:
        return cls(value)
    except ValueError:
        raise WireError(code, f"unknown {cls.__name__.lower()} code {value}", request_id) from None


def _model_id_bytes(model_id: str) -> bytes:
    raw = model_id.encode("utf-8") if isinstance(model_id, str) else b""
    if not raw or len(raw) > MODEL_ID_BYTES or b"\0" in raw:
        raise WireError(ErrorCode.BAD_FIELD, f"model id must be 1..{MODEL_ID_BYTES} UTF-8 bytes without NUL, got {model_id!r}")
    return raw.ljust(MODEL_ID_BYTES, b"\0")


# -- requests -------------------------------------------------------------------------
def _check_request_fields(split: int, dtype: Dtype, scale: float, zero_point: int,
                          exit_threshold: float, budget_ms: float, rid: int | None) -> None:
    """Rules shared by encoder and decoder, so nothing is sent that the cloud rejects."""
    if dtype is Dtype.FRAME and split != 0:
        raise WireError(ErrorCode.BAD_DTYPE, f"a raw frame can only cross split 0, not split {split}", rid)
    if dtype is Dtype.U8:
        # positive, and (q - zero_point) * scale finite for every q (NaN fails too)
        if not (scale > 0.0 and max(zero_point, 255 - zero_point) * scale <= _F32_MAX):
            raise WireError(ErrorCode.BAD_QUANTIZATION, f"scale {scale} with zero point {zero_point} "
                            "is not positive or overflows float32", rid)
    elif scale != 0.0 or zero_point != 0:
        raise WireError(ErrorCode.BAD_QUANTIZATION, f"{dtype.name} payload must carry scale 0 and zero point 0", rid)
    if not exit_threshold >= 0.0:  # NaN fails too; > 1 means "no early exit in the tail"
        raise WireError(ErrorCode.BAD_FIELD, f"exit threshold {exit_threshold} must be >= 0", rid)
    if not 0.0 <= budget_ms < math.inf:
        raise WireError(ErrorCode.BAD_FIELD, f"latency budget {budget_ms} ms must be finite and >= 0", rid)


def _request_payload(x, dtype: Dtype) -> tuple[np.ndarray, tuple[int, int, int], float, int]:
    """(array to send, (C, H, W), scale, zero_point) for an activation or frame."""
    a = _as_numpy(x)
    if dtype is Dtype.FRAME:
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise WireError(ErrorCode.BAD_DTYPE, f"a FRAME payload is an HxWx3 uint8 rgb8 image, got {a.dtype} {a.shape}")
        return a, (3, a.shape[0], a.shape[1]), 0.0, 0
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3 or not np.issubdtype(a.dtype, np.floating):
        raise WireError(ErrorCode.SHAPE_MISMATCH, f"activation must be a float (C, H, W) tensor, got {a.dtype} {a.shape}")
    if dtype is Dtype.U8:
        q, scale, zero_point = quantize(a)
        return q, a.shape, scale, zero_point
    lo, hi = _finite_range(a)
    if dtype is Dtype.F16:
        if max(-lo, hi) >= _F16_INF:
            raise WireError(ErrorCode.NON_FINITE, f"range {lo}..{hi} overflows float16")
        # torch converts to half several times faster than numpy
        a = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).half().numpy()
    return a.astype(_NP_DTYPE[dtype], copy=False), a.shape, 0.0, 0


def encode_request(x, *, request_id: int, model_id: str, split: int, exit_threshold: float,
                   dtype: Dtype = Dtype.U8, codec: Codec = Codec.LZ4, budget_ms: float = 0.0,
                   sent_ns: int | None = None) -> bytes:
    """Frame the activation ``x`` ((C, H, W) or (1, C, H, W) float; an HxWx3 uint8 frame
    for ``Dtype.FRAME``) crossing ``split``."""
    dtype, codec = Dtype(dtype), Codec(codec)
    arr, shape, scale, zero_point = _request_payload(x, dtype)
    _check_request_fields(split, dtype, scale, zero_point, exit_threshold, budget_ms, None)
    raw = memoryview(np.ascontiguousarray(arr)).cast("B")
    payload = _compress(codec, raw)
    sent_ns = time.time_ns() if sent_ns is None else sent_ns
    header = _pack(_REQUEST, MAGIC, VERSION, Kind.REQUEST, 0, request_id, len(payload), sent_ns,
                   exit_threshold, _model_id_bytes(model_id), scale, budget_ms, *shape, split, dtype, codec,
                   zero_point)
    return _seal(header, payload)


def _payload_tensor(raw: bytearray, dtype: Dtype, shape: tuple[int, int, int], scale: float,
                    zero_point: int, rid: int) -> torch.Tensor:
    """Raw payload -> float32 (C, H, W) tensor for the tail, wrapping ``raw`` without copying."""
    a = np.frombuffer(raw, dtype=_NP_DTYPE[dtype])
    if dtype is Dtype.FRAME:
        c, h, w = shape
        return to_model_input(a.reshape(h, w, c), h)[0]   # the on-device preprocessing, bit for bit
    if dtype is Dtype.U8:
        return torch.from_numpy(dequantize(a, scale, zero_point).reshape(shape))
    t = torch.from_numpy(a.reshape(shape)).float()      # F16 -> F32 converts; F32 is a no-op
    _finite_range(t.numpy(), rid)
    return t


def decode_request(buf, *, expected_model_id: str, expected_shapes: Mapping[int, tuple],
                   max_bytes: int = MAX_REQUEST_BYTES) -> Request:
    """Validate and unpack a request frame. ``expected_shapes`` maps each split the cloud
    serves to its (C, H, W) (see :func:`split_shapes`). Raises only :class:`WireError`."""
    fields, payload = _open(buf, (Kind.REQUEST,), max_bytes)
    (_, _, _, flags, rid, _, sent_ns, threshold, model_raw, scale, budget_ms,
     c, h, w, split, dtype, codec, zero_point) = fields      # REQUEST_FIELDS
    if flags:
        raise WireError(ErrorCode.BAD_FIELD, f"request flags must be 0, got {flags:#x}", rid)
    if model_raw != _model_id_bytes(expected_model_id):
        got = model_raw.rstrip(b"\0").decode("utf-8", "replace")
        raise WireError(ErrorCode.WRONG_MODEL, f"frame is for model {got!r}, this server runs {expected_model_id!r}", rid)
    if split not in expected_shapes:
        raise WireError(ErrorCode.SPLIT_OUT_OF_RANGE,
                        f"split {split} is not served; served splits: {sorted(expected_shapes)}", rid)
    dtype = _enum(Dtype, dtype, ErrorCode.BAD_DTYPE, rid)
    codec = _enum(Codec, codec, ErrorCode.BAD_CODEC, rid)
    shape = (c, h, w)
    want = tuple(int(d) for d in expected_shapes[split])
    if shape != want:
        raise WireError(ErrorCode.SHAPE_MISMATCH, f"shape {shape} does not match {want} at split {split}", rid)
    _check_request_fields(split, dtype, scale, zero_point, threshold, budget_ms, rid)
    raw_size = c * h * w * _NP_DTYPE[dtype].itemsize
    if raw_size > MAX_TENSOR_BYTES:
        raise WireError(ErrorCode.OVERSIZE, f"tensor of {raw_size} bytes exceeds {MAX_TENSOR_BYTES}", rid)
    raw = _decompress(codec, payload, raw_size, rid)
    tensor = _payload_tensor(raw, dtype, shape, scale, zero_point, rid)
    return Request(rid, expected_model_id, split, dtype, codec, shape, scale, zero_point,
                   threshold, sent_ns, budget_ms, tensor, len(payload) + _REQUEST.size + _CRC.size)


def split_shapes(net) -> dict[int, tuple[int, int, int]]:
    """{split: (C, H, W)} for every split a cloud tail can serve (all but 'all on device')."""
    return {s: tuple(net.split_shape(s)) for s in net.split_points() if s < net.num_stages}


# -- replies --------------------------------------------------------------------------
def _check_reply(r: Reply, num_exits: int | None, rid: int | None) -> None:
    def bad(why: str):
        return WireError(ErrorCode.BAD_FIELD, why, rid)

    for name in ("collision_prob", "confidence"):
        if not 0.0 <= getattr(r, name) <= 1.0:
            raise bad(f"{name} {getattr(r, name)} is not a probability")
    if not -1.0 <= r.steering <= 1.0:
        raise bad(f"steering {r.steering} is outside [-1, 1]")
    for name in ("compute_ms", "queue_ms"):
        if not 0.0 <= getattr(r, name) < math.inf:
            raise bad(f"{name} {getattr(r, name)} must be finite and >= 0")
    if r.batch_size < 1:
        raise bad(f"batch size {r.batch_size} must be >= 1")
    if num_exits is not None and not 0 <= r.exit_index < num_exits:
        raise bad(f"exit index {r.exit_index} is not in [0, {num_exits})")


def encode_reply(r: Reply) -> bytes:
    _check_reply(r, None, None)
    return _seal(_pack(_REPLY, MAGIC, VERSION, Kind.REPLY, 0, r.request_id, 0, r.sent_ns,
                       r.collision_prob, r.confidence, r.steering, r.compute_ms, r.queue_ms,
                       r.batch_size, r.exit_index, r.steering_bin))


def encode_error(code: ErrorCode | int, message: str, request_id: int | None = None) -> bytes:
    """An error reply; ``request_id`` None when the request could not be identified."""
    text = message.encode("utf-8")[:MAX_ERROR_MESSAGE].decode("utf-8", "ignore").encode("utf-8")
    flags = 0 if request_id is None else FLAG_HAS_REQUEST_ID
    header = _pack(_ERROR, MAGIC, VERSION, Kind.ERROR, flags, request_id or 0, len(text), int(code))
    return _seal(header, text)


def error_reply_for(exc: WireError) -> bytes:
    """The error reply the cloud sends for a frame it rejected."""
    return encode_error(exc.code, exc.message, exc.request_id)


def decode_reply(buf, *, max_bytes: int = MAX_REPLY_BYTES, num_exits: int | None = None) -> Reply | ErrorReply:
    """Unpack a reply or an error reply. Raises only :class:`WireError`."""
    fields, payload = _open(buf, (Kind.REPLY, Kind.ERROR), max_bytes)
    kind, flags, rid = fields[2], fields[3], fields[4]
    if kind == Kind.ERROR:
        if flags & ~FLAG_HAS_REQUEST_ID or (not flags and rid):
            raise WireError(ErrorCode.BAD_FIELD, f"bad error-reply flags {flags:#x} for request id {rid}")
        if len(payload) > MAX_ERROR_MESSAGE:
            raise WireError(ErrorCode.OVERSIZE, f"error message of {len(payload)} bytes exceeds {MAX_ERROR_MESSAGE}")
        code = fields[6]
        if code in ErrorCode.__members__.values():
            code = ErrorCode(code)
        return ErrorReply(code, bytes(payload).decode("utf-8", "replace"), rid if flags else None)
    if flags or len(payload):
        raise WireError(ErrorCode.BAD_FIELD, "reply must have flags 0 and no payload", rid)
    sent_ns, coll, conf, steer, compute_ms, queue_ms, batch, exit_index, steer_bin = fields[6:]
    reply = Reply(rid, exit_index, coll, conf, steer, steer_bin, compute_ms, queue_ms, batch, sent_ns)
    _check_reply(reply, num_exits, rid)
    return reply


# -- link probes ----------------------------------------------------------------------
def encode_probe_reply(received_ns: int, size: int) -> bytes:
    """A probe reply of ``size`` bytes (at least ``PROBE_REPLY_MIN_BYTES``) stamped with the
    cloud's monotonic clock when the probe arrived: a probe train's spacing is read where the
    link made it, not after the cloud's and the monitor's scheduling added their own."""
    padding = max(0, size - PROBE_REPLY_MIN_BYTES)
    return _seal(_pack(_PROBE_REPLY, MAGIC, VERSION, Kind.PROBE_REPLY, 0, 0, padding, received_ns), bytes(padding))


def decode_probe_reply(buf, *, max_bytes: int) -> int:
    """The cloud's ``received_ns`` from a probe reply. Raises only :class:`WireError`."""
    fields, payload = _open(buf, (Kind.PROBE_REPLY,), max_bytes)
    if fields[3] or fields[4] or payload != bytes(len(payload)):
        raise WireError(ErrorCode.BAD_FIELD, "probe reply must have flags 0, request id 0 and zero padding")
    return fields[6]
