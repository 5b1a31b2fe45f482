"""What securing the link costs: offload round trips over mutual TLS with the cloud's access
control versus plain TCP, on loopback, side by side.

Two `spinn cloud` servers (one secured with `spinn certs` certificates, one plain), one
drone end each; the same request frames (the flights' split, the drone's u8-lz4 encoding)
alternate between them so that machine noise falls on both alike. Reports the median,
p95 and p99 round trip of each and the median difference (issue 13's target: < 1 ms).

    .venv/bin/python bench/bench_tls.py [--checkpoint default] [--requests 500] [--split 2]
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

import torch

from spinn_ros.core import codec
from spinn_ros.core.model_ref import load_model
from spinn_ros.core.preprocess import to_model_input
from spinn_ros.core.progressive import run_head
from spinn_ros.testing.bench_io import print_table, summary_ms, write_json
from spinn_ros.testing.cloud import cloud_link, round_trip
from spinn_ros.testing.frames import scene_frames
from spinn_ros.tools.certs import ensure_certs


def request_frames(ref: str, split: int, n: int) -> list[bytes]:
    """The drone's wire frames (u8-lz4) for ``n`` simulator frames at ``split``."""
    model, model_id = load_model(ref)
    out = []
    for i, f in enumerate(scene_frames(min(n, 50))):
        head = run_head(model, to_model_input(f, model.spec.input_size), split, 1.0, offload=True)
        out.append(codec.encode_request(head.activation, request_id=i + 1, model_id=model_id, split=split,
                                        exit_threshold=1.0, dtype=codec.Dtype.U8, codec=codec.Codec.LZ4))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="default")
    ap.add_argument("--requests", type=int, default=500, help="round trips per transport")
    ap.add_argument("--split", type=int, default=2, help="split point of the request frames (the flights': 2)")
    opts = ap.parse_args(argv)
    torch.set_num_threads(1)
    reqs = request_frames(opts.checkpoint, opts.split, opts.requests)
    samples: dict[str, list[float]] = {"tcp": [], "tls": []}
    with tempfile.TemporaryDirectory(prefix="spinn-tls-") as certs, contextlib.ExitStack() as stack:
        ensure_certs(Path(certs), ["bench"])
        links = {"tcp": stack.enter_context(cloud_link(opts.checkpoint, 1, 0.0)),
                 "tls": stack.enter_context(cloud_link(opts.checkpoint, 1, 0.0, certs=certs))}
        for i in range(20):                 # warm-up: connections, allocators, the tails' first runs
            for link in links.values():
                round_trip(link, reqs[i % len(reqs)])
        for i in range(opts.requests):
            order = ("tcp", "tls") if i % 2 else ("tls", "tcp")     # alternate who goes first
            for name in order:
                samples[name].append(round_trip(links[name], reqs[i % len(reqs)])[0])
    rows = [{"transport": name, "bytes": len(reqs[0]), **summary_ms(s)} for name, s in samples.items()]
    diff = rows[1]["median_ms"] - rows[0]["median_ms"]
    print_table(rows, ["transport", "bytes", "n", "median_ms", "p95_ms", "p99_ms", "mean_ms"],
                title=f"offload round trip on loopback, split {opts.split}: TLS - TCP median = {diff:+.3f} ms")
    write_json("tls", {"split": opts.split, "rows": rows, "tls_minus_tcp_median_ms": diff})
    return 0


if __name__ == "__main__":
    sys.exit(main())
