"""The codec fuzzer (spinn_ros/testing/fuzz.py) at benchmark size: mutated frames through the
wire format's decoders and a real tail server; counts crashes and hangs (target: 0 and 0).

    .venv/bin/python bench/fuzz_codec.py [--frames 100000] [--seed 0] [--checkpoint random:small:0]
"""
from __future__ import annotations

import argparse
import sys

from spinn_ros.testing.bench_io import write_json
from spinn_ros.testing.fuzz import fuzz


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", default="random:small:0", help="the tail server's model (default: small, random)")
    ap.add_argument("--hang-s", type=float, default=5.0, help="a decode or an answer slower than this is a hang")
    opts = ap.parse_args(argv)
    res = fuzz(opts.frames, opts.seed, opts.checkpoint, opts.hang_s)
    for k in ("frames", "seconds", "frames_per_s", "crashes", "hangs", "longest_decode_ms"):
        print(f"{k:>18}: {res[k]}")
    for k in ("decoded_as", "server_answers"):
        print(f"{k:>18}: " + ", ".join(f"{name} {c}" for name, c in res[k].items()))
    for line in res["crash_examples"] + res["hang_examples"]:
        print("  " + line)
    write_json("fuzz_codec", res)
    return 1 if res["crashes"] or res["hangs"] else 0


if __name__ == "__main__":
    sys.exit(main())
