"""A flight's summary as a printed table and a top-down plot."""
from __future__ import annotations

import math
from pathlib import Path


def summary_table(s: dict) -> str:
    def ms(v):
        return "-" if v is None else f"{v:.1f} ms"

    out, fr, lat, cmd = s["outcome"], s["frames"], s["control_latency_ms"], s["commands"]
    sh = fr["share"]
    rows = [
        ("course", f"{s['course']['kind']} seed {s['course']['seed']}; mode {s['mode']}; trace {s['trace']}; "
                   f"drone {s['slowdown']:g}x slower than the profiled machine"),
        ("outcome", f"{out['end_reason']}; goal {'reached' if out['reached_goal'] else 'NOT reached'}"),
        ("distance flown", f"{out['distance_flown_m']:.2f} m ({out['distance_to_goal_m']:.2f} m to the goal)"),
        ("collisions", str(out["collisions"])),
        ("flight time", f"{out['sim_time_s']:.1f} s sim, {out['wall_time_s']:.1f} s wall"),
        ("frames", f"{fr['camera']} seen, {fr['answered']} answered"),
        ("answered", f"on device {sh['device']:.0%}  offloaded {sh['offloaded']:.0%}  refined by cloud "
                     f"{sh['refined']:.0%}  fallen back {sh['fallback']:.0%}"),
        ("control latency", f"p50 {ms(lat['p50'])}  p95 {ms(lat['p95'])}  (image arrival -> command, n={lat['n']})"),
        ("drone latency", f"p50 {ms(s['drone_latency_ms']['first_result_p50'])}  p95 "
                          f"{ms(s['drone_latency_ms']['first_result_p95'])}  (result latency_ms, sim clock)"),
        ("command staleness", f"p50 {ms(s['command_staleness_ms']['p50'])}  p95 {ms(s['command_staleness_ms']['p95'])}"
                              "  (age of the frame behind the latest result, at each camera frame)"),
        ("commands", f"{cmd['count']}; longest gap {cmd['max_gap_wall_s'] * 1e3:.0f} ms wall (timeout "
                     f"{cmd['controller_timeout_s'] * 1e3:.0f} ms); watchdog hovers {cmd['watchdog_hovers']}"),
        ("plan changes", f"{s['plan_changes']}" + (f" (monitor plans applied: {s['plans_applied'] or 'none'})"
                                                    if s["monitor"] else " (no monitor: fixed split and threshold)")),
    ]
    if s["link"]["events"]:
        r = s["link"]["offload_resumed_after_s"]
        rows.append(("link", f"{len(s['link']['events'])} changes; offloading resumed "
                             + ("-" if r is None else f"{r:.2f} s after the link recovered")))
    rows.append(("nodes", "all exited cleanly" if s["nodes"]["clean"] else f"UNCLEAN: {s['nodes']['exit_codes']}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def plot(summary: dict, timeline: dict, course: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, Polygon, Rectangle

    fig, ax = plt.subplots(figsize=(11, 5.5))
    if course:
        fb = course.get("flight_bounds") or {}
        xr, yr = fb.get("x"), fb.get("y")
        if xr and yr:
            ax.add_patch(Rectangle((xr[0], yr[0]), xr[1] - xr[0], yr[1] - yr[0], fill=False, ls=":", color="0.6",
                                   label="flight bounds"))
        for ob in course["obstacles"]:
            (cx, cy), size, yaw = ob["center"], ob["size"], ob.get("yaw", 0.0)
            color = ob.get("color", [0.5, 0.5, 0.5, 1.0])[:3]
            if ob["kind"] == "pillar":
                ax.add_patch(Circle((cx, cy), size[0], color=color, alpha=0.8))
            else:
                hx, hy = size[0] / 2, size[1] / 2
                c, s = math.cos(yaw), math.sin(yaw)
                pts = [(cx + c * x - s * y, cy + s * x + c * y) for x, y in ((-hx, -hy), (hx, -hy), (hx, hy), (-hx, hy))]
                ax.add_patch(Polygon(pts, closed=True, color=color, alpha=0.8))
        sx, sy = course["start"][:2]
        gx, gy = course["goal"][:2]
        ax.plot(sx, sy, "k^", ms=9, label="start")
        ax.add_patch(Circle((gx, gy), course.get("goal_radius", 1.0), fill=False, color="green", lw=1.5))
        ax.plot(gx, gy, "g*", ms=14, label="goal")
    odo = timeline["odometry"]
    if odo:
        ax.plot([p[1] for p in odo], [p[2] for p in odo], "-", color="0.35", lw=1, zorder=3)
    colors = {"device": "tab:blue", "cloud": "tab:green", "fallback": "tab:orange", None: "tab:red"}
    labels = {"device": "answered on device", "cloud": "refined by the cloud", "fallback": "device fallback",
              None: "no answer"}
    for src in ("device", "cloud", "fallback", None):
        pts = [f["xy"] for f in timeline["frames"] if f["source"] == src and f["xy"]]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, color=colors[src], zorder=4,
                       label=f"{labels[src]} ({len(pts)})")
    hits = summary["outcome"]["collision_positions"]
    if hits:
        ax.scatter([p[0] for p in hits], [p[1] for p in hits], marker="X", s=160, color="red", zorder=6,
                   label="collision")
    for i, pc in enumerate(timeline["plan_changes"]):
        if pc["xy"]:
            ax.scatter(*pc["xy"], marker="D", s=60, facecolor="none", edgecolor="black", zorder=6,
                       label="plan change" if i == 0 else None)
            ax.annotate(f"plan {pc['to']}", pc["xy"], textcoords="offset points", xytext=(4, 6), fontsize=7)
    # link changes: where the drone was when the link went down / came back
    frames = [f for f in timeline["frames"] if f["xy"]]
    for e in timeline["link_events"]:
        if e["source"] == "setup" or not frames:
            continue
        f = min(frames, key=lambda f: abs(f["t_image"] - e["t"]))
        if abs(f["t_image"] - e["t"]) > 0.5:
            continue
        marker = "v" if not e["up"] else "|"
        ax.scatter(*f["xy"], marker=marker, s=50, color="purple", zorder=5)
    if timeline["link_events"]:
        ax.scatter([], [], marker="v", color="purple", label="link down")
        ax.scatter([], [], marker="|", color="purple", label="link change / back up")
    o, lat = summary["outcome"], summary["control_latency_ms"]
    sh = summary["frames"]["share"]
    p50 = "-" if lat["p50"] is None else f"{lat['p50']:.0f} ms"
    ax.set_title(f"{summary['course']['kind']} seed {summary['course']['seed']}, {summary['mode']}, "
                 f"trace {summary['trace']}: {o['end_reason']}, {o['collisions']} collision(s), "
                 f"{o['distance_flown_m']:.1f} m\n"
                 f"device {sh['device']:.0%} / refined {sh['refined']:.0%} / fallback {sh['fallback']:.0%}; "
                 f"control latency p50 {p50}; plan changes {summary['plan_changes']}", fontsize=10)
    ax.set_xlabel("x (m, toward the goal)")
    ax.set_ylabel("y (m, left)")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)

