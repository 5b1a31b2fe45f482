"""``spinn fly``: its options and its main (run the flight, write and print the report)."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

import yaml

from ...sim.world import COURSE_KINDS
from . import __doc__ as fly_doc
from .analysis import CONTROL_LATENCY_DEFINITION, analyse
from .flight import Flight, FlightError
from .recording import verify_recording
from .report import plot, summary_table
from .stress import parse_stall
from .traces import load_trace

#: the main job's drone computer, emulated: this many times slower than the machine the
#: device profile was measured on (a small flight computer next to one desktop core), so
#: that SPINN has a reason to offload; with 1 the shipped model's early exits meet the SLA
#: on the drone alone and the planner keeps everything there
DEFAULT_SLOWDOWN = 20.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="spinn fly", description=fly_doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1, help="course seed (default 1)")
    ap.add_argument("--kind", default="forest",
                    help="course kind (scene family): " + ", ".join(COURSE_KINDS) + ", or random (one of the first "
                         "four, drawn from the seed); composite and gates are never in the model's training data")
    ap.add_argument("--trace", default="none",
                    help="link trace: none (loopback, no emulation), outage, degrade, flapping, or a trace YAML "
                         "file (docs/link-emulation.md); anything but none needs root")
    ap.add_argument("--outage-mode", choices=("down", "drop"), default="down",
                    help="how the trace's outages cut the link: down (interfaces down: connections fail at once, "
                         "the default) or drop (a blackout: every packet vanishes, noticed only by timeouts)")
    ap.add_argument("--sla", default="", help="SLA file for the monitor's planner (when the package has a monitor)")
    ap.add_argument("--checkpoint", default="default",
                    help="model for drone and cloud: default (the shipped one), a path, or random:<size>:<seed>")
    ap.add_argument("--mode", choices=("spinn", "device-only", "cloud-only"), default="spinn",
                    help="spinn (default), or a baseline: device-only (whole model on the drone, no cloud) or "
                         "cloud-only (the raw frame to the cloud)")
    ap.add_argument("--split", type=int, default=-2, help="split point (default: the mode's / the monitor's)")
    ap.add_argument("--slowdown", type=float, default=DEFAULT_SLOWDOWN,
                    help="emulate a drone computer this many times slower than the profiled machine (the drone's "
                         "emulate.slowdown, which its monitor reads and plans for; default %(default)g: a small flight "
                         "computer, for which offloading pays; 1: this machine's full speed)")
    ap.add_argument("--no-monitor", action="store_true",
                    help="fly without the monitor (no re-planning: the mode's fixed split and threshold)")
    ap.add_argument("--max-time", type=float, default=60.0, help="episode limit, simulated seconds (default 60)")
    ap.add_argument("--out", default="", help="output directory (default runs/flight-<timestamp>)")
    ap.add_argument("--quiet", action="store_true", help="no live progress line and no node output")
    ap.add_argument("--verbose", action="store_true", help="echo every node's output")
    ap.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                    help="parameter override for a node (sim, drone, cloud, monitor), e.g. sim.goal_radius=10 or "
                         "drone.controller.max_forward_speed=1.5; repeatable")
    ap.add_argument("--security", choices=("mtls", "plain"), default="mtls",
                    help="mtls (default): the drone<->cloud link with mutual TLS and the cloud's access control, "
                         "certificates made into OUT/certs; plain: unauthenticated TCP (a warning)")
    ap.add_argument("--stress-cpus", type=int, default=0, metavar="N",
                    help="stress test: N busy-loop processes run from start-up to the end of the flight")
    ap.add_argument("--stall-drone", default="", metavar="MS@S",
                    help="stress test: freeze the drone node (SIGSTOP) for MS ms every S s of the flight, e.g. 300@2")
    ap.add_argument("--sim-exec", default="", help=argparse.SUPPRESS)   # tests: a script run as the simulator node
    opts = ap.parse_args(argv)
    try:
        opts.overrides = parse_overrides(opts.set)
    except ValueError as exc:
        ap.error(str(exc))
    if opts.kind not in (*COURSE_KINDS, "random") and not opts.sim_exec:   # a test's own simulator names its own
        ap.error(f"--kind: {opts.kind!r} is not a course kind; choose one of {', '.join(COURSE_KINDS)} or random")
    if opts.max_time <= 0:
        ap.error("--max-time must be > 0")
    if opts.slowdown < 1.0:
        ap.error("--slowdown must be >= 1")
    return opts


def parse_overrides(items: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        node, dot, param = key.partition(".")
        if not sep or not dot or node not in ("sim", "drone", "cloud", "monitor") or not param:
            raise ValueError(f"--set takes NODE.PARAM=VALUE with NODE one of sim, drone, cloud, monitor; got {item!r}")
        out.setdefault(node, {})[param] = yaml.safe_load(value) if value != "" else ""
    return out


def loud(lines: list[str]) -> str:
    width = max(map(len, lines)) + 4
    bar = "!" * width
    return "\n".join([bar, *(f"! {line:<{width - 4}} !" for line in lines), bar])


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    try:
        trace = load_trace(opts.trace)
    except (ValueError, OSError) as exc:
        print(f"spinn fly: {exc}", file=sys.stderr)
        return 2
    if trace is not None:
        from ...linkemu import link_emulation_problem

        problem = link_emulation_problem()
        if problem:
            print(loud(["LINK TRACES NEED ROOT: this flight did NOT run.",
                        f"--trace {opts.trace} emulates the drone<->cloud link with network namespaces,",
                        f"and here: {problem}.",
                        "Run as root (sudo), or fly without a trace: --trace none."]), file=sys.stderr)
            return 2
    try:
        parse_stall(opts.stall_drone)
    except ValueError as exc:
        print(f"spinn fly: {exc}", file=sys.stderr)
        return 2
    if opts.checkpoint == "default":
        from ...core.checkpoint import default_checkpoint_path

        if not default_checkpoint_path().is_file():
            print(f"spinn fly: the trained checkpoint {default_checkpoint_path()} is not there yet; "
                  f"pass --checkpoint PATH, or --checkpoint random:small:0 to try the plumbing", file=sys.stderr)
            return 2
    out = Path(opts.out or f"runs/flight-{time.strftime('%Y%m%d-%H%M%S')}")
    if (out / "recording").exists():
        print(f"spinn fly: {out} already holds a flight; choose another --out", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    say = (lambda *a, **k: None) if opts.quiet else (lambda *a, **k: print(*a, **k, flush=True))

    def on_signal(*_):
        raise KeyboardInterrupt

    # explicitly: a shell starting this in the background would otherwise leave SIGINT ignored
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    flight = Flight(opts, out, say)
    status, error = 0, None
    try:
        flight.run()
    except KeyboardInterrupt:
        status, error = 130, "interrupted"
        print("\ninterrupted: all nodes stopped", flush=True)
    except FlightError as exc:
        status, error = 1, str(exc)
        print(f"spinn fly: {exc}", file=sys.stderr, flush=True)
    summary, timeline = analyse(flight)
    if error:
        summary["error"] = error
    summary["outputs"] = {"summary": str(out / "summary.json"), "timeline": str(out / "timeline.json"),
                          "plot": str(out / "flight.png"), "recording": str(out / "recording"),
                          "node_log": str(out / "nodes.log")}
    try:
        summary["recording"] = {"format": "rosbag2, MCAP storage (rosbags)", **verify_recording(out / "recording")}
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        summary["recording"] = {"readable": False, "error": f"{type(exc).__name__}: {exc}"}
    try:
        plot(summary, timeline, flight.log.course, out / "flight.png")
    except Exception as exc:  # noqa: BLE001
        summary["notes"].append(f"plot failed: {type(exc).__name__}: {exc}")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "timeline.json").write_text(json.dumps(timeline, default=str))
    print(f"\nflight summary ({out}):\n{summary_table(summary)}", flush=True)
    print(f"  control latency = {CONTROL_LATENCY_DEFINITION}")
    print(f"  outputs: summary.json, timeline.json, flight.png, recording/ (rosbag2 + MCAP, "
          f"{sum(summary['recording'].get('messages', {}).values())} messages), nodes.log", flush=True)
    if status == 0 and not summary["nodes"]["clean"]:
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
