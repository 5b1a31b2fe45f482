"""A finished flight as numbers: the summary (outcome, frames, latencies, commands, plans, link)
and the per-frame timeline."""
from __future__ import annotations

import bisect
import functools
import time
from collections import Counter

import yaml

from ...core.on_time import command_ages_ms
from ...core.stats import percentile
from .traces import GOOD_LINK

SOURCES = {0: "device", 1: "cloud", 2: "fallback"}

CONTROL_LATENCY_DEFINITION = (
    "wall time from a camera image's arrival in the spinn fly process to the arrival of the first "
    "command stamped with that image's stamp (DDS to the drone and back included)")


#: the summary's percentiles: None (JSON null) when there were no samples
percentile_or_none = functools.partial(percentile, empty=None)


def analyse(flight) -> tuple[dict, dict]:
    """(summary, timeline) from a finished :class:`flight.Flight`."""
    o, log = flight.opts, flight.log
    t0 = flight.t_takeoff or (min(log.image_arrival.values()) if log.image_arrival else flight.t_start)
    t_end = flight.t_end or time.monotonic()
    rel = lambda t: round(t - t0, 4)  # noqa: E731
    # frames: every image this process saw, from take-off to the episode end
    frames = sorted(s for s, t in log.image_arrival.items() if t0 <= t <= t_end)
    finals = log.finals
    offloaded_stamps = {r["stamp"] for r in log.results if r["offload_bytes"] > 0 or r["provisional"]}

    def needs_cloud(s: int) -> bool:
        """Offloaded, or answered by the device alone below the threshold at its deepest exit (no cloud then)."""
        f = finals.get(s)
        if s in offloaded_stamps:
            return True
        return f is not None and f["source"] == 0 and f["split"] < f["num_exits"] and f["exit"] == f["split"] - 1 \
            and f["confidence"] < f["threshold"]

    answered = [s for s in frames if s in finals]
    by_source = Counter(SOURCES[finals[s]["source"]] for s in answered)
    offloaded = sum(1 for s in answered if s in offloaded_stamps)
    n = max(len(answered), 1)
    # (a command can arrive a little before this process got the image itself: the simulator's writer
    # serves its readers one by one; those frames count with their negative latency, as measured)
    latencies = [(log.first_command[s] - log.image_arrival[s]) * 1e3 for s in frames if s in log.first_command]
    from_source = [(log.first_command[s] - log.image_published[s]) * 1e3 for s in frames
                   if s in log.first_command and s in log.image_published]
    first_result: dict[int, dict] = {}
    for r in log.results:
        first_result.setdefault(r["stamp"], r)
    drone_lat = [first_result[s]["latency_ms"] for s in frames if s in first_result]
    ages = command_ages_ms([(s, log.image_arrival[s]) for s in frames], [(r["stamp"], r["t"]) for r in log.results])
    final_lat = [finals[s]["latency_ms"] for s in answered]
    cmds = sorted(c for c in log.commands if t0 <= c[0] <= t_end)
    gaps_wall = [b[0] - a[0] for a, b in zip(cmds, cmds[1:])]
    stamps = sorted(c[1] for c in cmds)
    gaps_stamp = [(b - a) / 1e9 for a, b in zip(stamps, stamps[1:])]
    watchdog = [c for c in cmds if c[4]]
    plan_ids = [finals[s]["plan_id"] for s in answered]
    # a change = the drone going from one monitor plan to another (plan 0, its own parameters, does not count)
    plan_switches = [(s, a, b) for s, a, b in zip(answered[1:], plan_ids, plan_ids[1:]) if a != b]
    plan_changes = [(s, a, b) for s, a, b in plan_switches if a != 0]
    collisions = [e for _, e in log.events if e.get("event") == "collision"]
    end = log.episode_end or {}
    prog = log.progress
    reached = any(e.get("event") == "goal_reached" for _, e in log.events)
    # link: when offloading resumed after the last time the link came back
    link_events = [{"t": rel(t), "up": s.up, "rate_mbit": s.rate_mbit, "rtt_ms": s.rtt_ms, "loss": s.loss,
                    "source": src} for t, s, src in flight.link_events]
    recovered_at = None
    for i, e in enumerate(link_events):
        prev = link_events[i - 1] if i else None
        bad_before = prev is not None and (not prev["up"] or prev["rate_mbit"] < GOOD_LINK["rate_mbit"] / 2
                                           or prev["rtt_ms"] > 4 * GOOD_LINK["rtt_ms"] or prev["loss"] > 0)
        good_now = e["up"] and e["rate_mbit"] >= GOOD_LINK["rate_mbit"] / 2 and e["rtt_ms"] <= 4 * GOOD_LINK["rtt_ms"] \
            and e["loss"] == 0
        if bad_before and good_now:
            recovered_at = e["t"]
    cloud_times = sorted(rel(finals[s]["t"]) for s in answered if finals[s]["source"] == 1)
    resumed_after = None
    if recovered_at is not None:
        later = [t for t in cloud_times if t >= recovered_at]
        resumed_after = round(later[0] - recovered_at, 3) if later else None
    takeoff_sim = flight.sim_takeoff if flight.sim_takeoff is not None else (log.odom[0][0] if log.odom else 0.0)
    duration = (end.get("time") or log.sim_time) - takeoff_sim
    cfg_timeout = 0.5
    try:
        from .. import launch_spec

        with open(launch_spec.find_params_file("drone")) as f:
            cfg_timeout = yaml.safe_load(f)["/**"]["ros__parameters"]["controller"]["timeout_s"]
    except Exception:  # noqa: BLE001
        pass
    cfg_timeout = o.overrides.get("drone", {}).get("controller.timeout_s", cfg_timeout)
    lags = [v * 1e3 for v in (flight.listener.callback_lag if flight.listener else [])]
    drone_diag = next((v for k, v in log.diagnostics.items() if k.startswith("/spinn_drone")), {})
    summary = {
        "course": {"seed": o.seed, "kind": (log.course or {}).get("kind", o.kind)},
        "mode": o.mode, "slowdown": o.slowdown, "trace": o.trace, "outage_mode": o.outage_mode if o.trace != "none" else None,
        "checkpoint": o.checkpoint,
        "model_id": drone_diag.get("model_id"),
        "outcome": {
            "end_reason": end.get("reason") or ("time_limit" if flight.time_limit else None)
            or prog.get("end_reason") or "stopped",
            "reached_goal": reached,
            "collisions": len(collisions),
            "collision_positions": [c.get("position") for c in collisions],
            "distance_flown_m": round(end.get("distance_travelled", prog.get("distance_travelled", 0.0)), 3),
            "distance_to_goal_m": round(end.get("distance_to_goal", prog.get("distance_to_goal", float("nan"))), 3),
            "final_position": list(log.odom[-1][1:4]) if log.odom else None,
            "final_speed_mps": log.odom[-1][5] if log.odom else None,
            "sim_time_s": round(duration, 3),
            "wall_time_s": round(t_end - t0, 3),
        },
        "frames": {
            "camera": len(frames), "answered": len(answered),
            "device": by_source["device"], "offloaded": offloaded, "refined": by_source["cloud"],
            "fallback": by_source["fallback"],
            "share": {"device": by_source["device"] / n, "offloaded": offloaded / n, "refined": by_source["cloud"] / n,
                      "fallback": by_source["fallback"] / n},
            "exit_histogram": dict(sorted(Counter(finals[s]["exit"] for s in answered).items())),
        },
        "control_latency_ms": {"p50": percentile_or_none(latencies, 50), "p95": percentile_or_none(latencies, 95),
                               "max": max(latencies, default=None), "n": len(latencies),
                               "definition": CONTROL_LATENCY_DEFINITION,
                               "from_publish_p50": percentile_or_none(from_source, 50),
                               "from_publish_p95": percentile_or_none(from_source, 95),
                               "from_publish_definition": "the same, from the simulator's write of the image "
                                                          "(DDS source timestamp) instead of its arrival here"},
        "drone_latency_ms": {"first_result_p50": percentile_or_none(drone_lat, 50),
                             "first_result_p95": percentile_or_none(drone_lat, 95),
                             "final_p50": percentile_or_none(final_lat, 50), "final_p95": percentile_or_none(final_lat, 95),
                             "definition": "InferenceResult.latency_ms: image stamp -> result published, on the "
                                           "drone's sim clock (/clock at 120 Hz: ~8 ms resolution)"},
        "command_staleness_ms": {"p50": percentile_or_none(ages, 50), "p95": percentile_or_none(ages, 95),
                                 "definition": "at each camera frame's arrival here: how long ago the frame behind "
                                               "the latest result (provisional or final) received here arrived"},
        "flight_tool_callback_lag_ms": {"p50": percentile_or_none(lags, 50), "p95": percentile_or_none(lags, 95),
                                        "definition": "camera frames: DDS reception -> this process's callback"},
        "commands": {"count": len(cmds), "watchdog_hovers": len(watchdog),
                     "max_gap_wall_s": round(max(gaps_wall, default=0.0), 4),
                     "max_gap_stamp_s": round(max(gaps_stamp, default=0.0), 4),
                     "controller_timeout_s": cfg_timeout},
        "plan_changes": len(plan_changes),
        "plans_applied": sorted(set(plan_ids) - {0}),
        "plans": [p for _, p in log.plans],
        "link": {"trace": o.trace, "events": link_events, "recovered_at_s": recovered_at,
                 "offload_resumed_after_s": resumed_after},
        "monitor": bool(log.links) or bool(log.plans),
        "drone_diagnostics": drone_diag,
        "ros_domain": flight.domain,
        "startup": flight.startup,
        "nodes": {"exit_codes": flight.exit_codes, "clean": all(c == 0 for c in flight.exit_codes.values()),
                  "dds_leftovers_removed": flight.dds_leftovers},
        "notes": flight.notes,
        "stress": {"cpu_hogs": flight.opts.stress_cpus, "drone_stalls": flight.staller.stalls if flight.staller else 0,
                   "stall": flight.opts.stall_drone},
    }
    odom_t = [p[0] for p in log.odom]

    def where(stamp_ns: int):
        if not log.odom:
            return None
        i = min(bisect.bisect_left(odom_t, stamp_ns / 1e9), len(log.odom) - 1)
        return [round(log.odom[i][1], 3), round(log.odom[i][2], 3)]

    timeline = {
        "takeoff_monotonic": t0,
        "end_s": rel(t_end),
        # in the drone's publication order (DDS sequence numbers): a reader matched mid-stream gets the writer's
        # recent history repaired after the first live sample, so arrival order is not always publication order
        "commands": [[rel(t), s / 1e9, round(vx, 4), round(wz, 4), wd, seq]
                     for t, s, vx, wz, wd, seq in sorted(cmds, key=lambda c: c[5])],
        "frames": [{"stamp": s / 1e9, "t_image": rel(log.image_arrival[s]),
                    "t_command": rel(log.first_command[s]) if s in log.first_command else None,
                    "t_final": rel(finals[s]["t"]) if s in finals else None,
                    "source": SOURCES[finals[s]["source"]] if s in finals else None,
                    "offloaded": s in offloaded_stamps, "needs_cloud": needs_cloud(s),
                    "exit": finals[s]["exit"] if s in finals else None,
                    "p": round(finals[s]["p"], 4) if s in finals else None,
                    "plan_id": finals[s]["plan_id"] if s in finals else None, "xy": where(s)} for s in frames],
        "results": [[rel(r["t"]), r["stamp"] / 1e9, r["provisional"], SOURCES[r["source"]], r["p"], r["steering"],
                     r["exit"], r["seq"], r["latency_ms"]]
                    for r in sorted(log.results, key=lambda r: r["seq"]) if r["t"] <= t_end + 1.0],
        "plan_changes": [{"stamp": s / 1e9, "from": a, "to": b, "xy": where(s)} for s, a, b in plan_switches],
        "link_events": link_events,
        "odometry": [[round(v, 4) for v in p] for p in log.odom[::5]],
        "events": [e for _, e in log.events],
    }
    return summary, timeline

