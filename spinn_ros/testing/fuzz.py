"""Fuzzing the wire format's decoders and the cloud's tail server with mutated frames.

A seeded mutator starts from valid frames (requests at every split, in every dtype and
codec the drone can send; replies and error replies) and flips bits, overwrites bytes
with edge values, truncates, extends, duplicates or rewrites header fields (payload
length, kind, dtype, shape); half the mutants get a fresh CRC32 so that they get past
the checksum into the field checks, the decompressors and the tensor code. Each frame
goes to ``codec.decode_request`` and ``codec.decode_reply`` (the drone's side), and every
request-shaped one also to a real ``TailServer`` (the cloud's side, with its model).

A crash is any exception other than ``codec.WireError`` from a decoder, an exception
from ``TailServer.submit``, or a server answer that is not a well-formed reply; a hang is
a decode slower than ``--hang-s`` or a server answer missing after it. Target: 0 and 0.

Run it with bench/fuzz_codec.py (the benchmark) or through test/unit/test_fuzz.py (a short run).
"""
from __future__ import annotations

import collections
import struct
import threading
import time
import zlib

import numpy as np
import torch

from ..core import codec
from ..core.model_ref import load_model
from ..core.tail_server import TailServer

EDGE_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)
EDGE_U32 = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 20, 1 << 26)
EDGE_F32 = (float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-45, 3.4e38)


def seeds(model, model_id: str) -> list[bytes]:
    """Valid frames of every kind the link carries, at every split of ``model``."""
    rng = np.random.default_rng(0)
    out = []
    shapes = codec.split_shapes(model)
    for split, shape in shapes.items():
        x = torch.from_numpy(rng.standard_normal((1, *shape)).astype(np.float32))
        for dtype in (codec.Dtype.F32, codec.Dtype.F16, codec.Dtype.U8):
            for comp in codec.Codec:
                out.append(codec.encode_request(x[0], request_id=int(rng.integers(1, 1 << 30)), model_id=model_id,
                                                split=split, exit_threshold=0.8, dtype=dtype, codec=comp))
    frame = rng.integers(0, 256, (model.spec.input_size, model.spec.input_size, 3), dtype=np.uint8)
    out.append(codec.encode_request(frame, request_id=3, model_id=model_id, split=0, exit_threshold=1.0,
                                    dtype=codec.Dtype.FRAME, codec=codec.Codec.LZ4))
    out.append(codec.encode_reply(codec.Reply(9, exit_index=model.num_exits - 1, collision_prob=0.3, confidence=0.9,
                                              steering=-0.2, steering_bin=1, compute_ms=2.0, queue_ms=0.5,
                                              batch_size=2)))
    out.append(codec.encode_error(codec.ErrorCode.OVERLOADED, "queue full", 9))
    return out


class Mutator:
    """Seeded mutations of valid frames (deterministic for a seed)."""

    def __init__(self, corpus: list[bytes], seed: int):
        self.corpus, self.rng = corpus, np.random.default_rng(seed)
        self.ops = (self.flip_bits, self.edge_byte, self.truncate, self.extend, self.edge_field, self.splice,
                    self.duplicate, self.edge_float)

    def __call__(self) -> tuple[bytes, str]:
        b = bytearray(self.corpus[int(self.rng.integers(len(self.corpus)))])
        names = []
        for _ in range(int(self.rng.integers(1, 4))):
            op = self.ops[int(self.rng.integers(len(self.ops)))]
            b = op(b)
            names.append(op.__name__)
        if len(b) >= 8 and self.rng.random() < 0.5:        # past the checksum, into the field checks
            b[-4:] = struct.pack("<I", zlib.crc32(bytes(b[:-4])))
            names.append("resealed")
        return bytes(b), "+".join(names)

    def _pos(self, b: bytearray, head_bias: bool = True) -> int:
        if not b:
            return 0
        if head_bias and self.rng.random() < 0.7:           # headers hold the interesting fields
            return int(self.rng.integers(min(len(b), 64)))
        return int(self.rng.integers(len(b)))

    def flip_bits(self, b):
        for _ in range(int(self.rng.integers(1, 9))):
            if b:
                b[self._pos(b)] ^= 1 << int(self.rng.integers(8))
        return b

    def edge_byte(self, b):
        if b:
            b[self._pos(b)] = EDGE_BYTES[int(self.rng.integers(len(EDGE_BYTES)))]
        return b

    def truncate(self, b):
        return b[: int(self.rng.integers(len(b) + 1))]

    def extend(self, b):
        return b + bytes(self.rng.integers(0, 256, int(self.rng.integers(1, 64)), dtype=np.uint8))

    def _overwrite_word(self, b, word: bytes):
        """``word`` (4 bytes) over an aligned word: where the header's lengths, ids and floats are."""
        i = self._pos(b) & ~3
        if i + 4 <= len(b):
            b[i:i + 4] = word
        return b

    def edge_field(self, b):
        return self._overwrite_word(b, struct.pack("<I", EDGE_U32[int(self.rng.integers(len(EDGE_U32)))]))

    def edge_float(self, b):
        return self._overwrite_word(b, struct.pack("<f", EDGE_F32[int(self.rng.integers(len(EDGE_F32)))]))

    def splice(self, b):
        other = self.corpus[int(self.rng.integers(len(self.corpus)))]
        cut = int(self.rng.integers(min(len(b), len(other)) + 1))
        return bytearray(b[:cut] + other[cut:])

    def duplicate(self, b):
        if not b:
            return b
        i = self._pos(b, head_bias=False)
        j = min(len(b), i + int(self.rng.integers(1, 256)))
        return b[:j] + b[i:j] + b[j:]


def decode_both(frame: bytes, model_id: str, shapes, num_exits: int) -> tuple[str, str]:
    """(request outcome, reply outcome): a kind name, or 'WireError:<code>'; other exceptions propagate."""
    outcomes = []
    for decode in (lambda: codec.decode_request(frame, expected_model_id=model_id, expected_shapes=shapes),
                   lambda: codec.decode_reply(frame, num_exits=num_exits)):
        try:
            outcomes.append(type(decode()).__name__)
        except codec.WireError as exc:
            outcomes.append(f"WireError:{exc.code.name if hasattr(exc.code, 'name') else exc.code}")
    return outcomes[0], outcomes[1]


class ServerDriver:
    """A real TailServer; counts each frame's answer, at most ``window`` outstanding."""

    def __init__(self, model, model_id: str, window: int = 64):
        self.server = TailServer(model, model_id, max_batch=8, max_wait_ms=1.0, max_queue=window * 2)
        self.window = threading.BoundedSemaphore(window)
        self.answers: collections.Counter = collections.Counter()
        self.bad: list[str] = []
        self.sent = 0
        self._lock = threading.Lock()

    def submit(self, frame: bytes) -> None:
        self.window.acquire()
        self.sent += 1
        once = threading.Lock()

        def respond(reply: bytes) -> None:
            if not once.acquire(blocking=False):
                with self._lock:
                    self.bad.append("answered twice")
                return
            try:
                kind = codec.decode_reply(reply)
                name = type(kind).__name__ + (f":{kind.code.name}" if isinstance(kind, codec.ErrorReply)
                                              and hasattr(kind.code, "name") else "")
            except codec.WireError as exc:
                name = "malformed"
                with self._lock:
                    self.bad.append(f"the server's answer does not decode: {exc}")
            with self._lock:
                self.answers[name] += 1
            self.window.release()

        self.server.submit(frame, respond, "fuzz")

    def drain(self, timeout_s: float) -> int:
        """Waits for every answer; returns how many are missing (hangs)."""
        deadline = time.monotonic() + timeout_s
        while sum(self.answers.values()) < self.sent and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.sent - sum(self.answers.values())

    def close(self) -> None:
        self.server.close()


def fuzz(n: int, seed: int = 0, checkpoint: str = "random:small:0", hang_s: float = 5.0) -> dict:
    """Runs ``n`` mutated frames through both decoders and the tail server; the figures as a dict."""
    torch.set_num_threads(1)
    model, model_id = load_model(checkpoint)
    shapes, num_exits = codec.split_shapes(model), model.num_exits
    mutate = Mutator(seeds(model, model_id), seed)
    driver = ServerDriver(model, model_id)
    outcomes: collections.Counter = collections.Counter()
    crashes: list[str] = []
    slow: list[str] = []
    longest = 0.0
    t0 = time.perf_counter()
    try:
        for i in range(n):
            frame, how = mutate()
            t = time.perf_counter()
            try:
                req, rep = decode_both(frame, model_id, shapes, num_exits)
            except Exception as exc:  # noqa: BLE001 - that is what the fuzzer looks for
                crashes.append(f"frame {i} ({how}): decoder raised {exc!r}")
                continue
            took = time.perf_counter() - t
            longest = max(longest, took)
            if took > hang_s:
                slow.append(f"frame {i} ({how}): decoding took {took:.1f} s")
            outcomes[f"request {req}"] += 1
            outcomes[f"reply {rep}"] += 1
            try:
                driver.submit(frame)
            except Exception as exc:  # noqa: BLE001
                crashes.append(f"frame {i} ({how}): TailServer.submit raised {exc!r}")
        missing = driver.drain(hang_s + 10)
    finally:
        driver.close()
    elapsed = time.perf_counter() - t0
    return {"frames": n, "seed": seed, "checkpoint": checkpoint, "seconds": round(elapsed, 1),
            "frames_per_s": round(n / elapsed), "crashes": len(crashes) + len(driver.bad),
            "hangs": len(slow) + missing, "longest_decode_ms": round(longest * 1e3, 2),
            "crash_examples": (crashes + driver.bad)[:10], "hang_examples": slow[:10],
            "decoded_as": dict(sorted(outcomes.items())), "server_answers": dict(sorted(driver.answers.items()))}
