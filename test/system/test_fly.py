"""Closed-loop flights (issue 6), CI-sized: simulator, drone, cloud (and the monitor when the
package has one) as real processes over real DDS and real Zenoh, flown by ``spinn fly``.

Every flight is one ``python -m spinn_ros.tools.fly`` run (a fresh ROS domain, nodes stopped
with SIGINT at the end); the tests read its summary.json and timeline.json. Flights are
cached per module, so the link-fault tests compare against the good-link flights of the
same courses. Courses are shortened by a large goal radius (the goal counts as reached
GOAL_RADIUS m from x = 20, i.e. at x = 20 - GOAL_RADIUS); the simulator runs in real time.

The link-fault tests need root (link emulation: the cloud in its own network namespace
behind an emulated veth link); without it they FAIL loudly, or skip with
SPINN_ALLOW_NO_ROOT=1. SPINN_FLIGHT_CHECKPOINT picks another model (e.g. random:small:0
to try the plumbing; the flight-outcome assertions then fail, as they should) and
SPINN_FLIGHT_ARGS adds `spinn fly` options (e.g. --no-monitor).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from spinn_ros.core.checkpoint import default_checkpoint_path
from spinn_ros.tools.harness import domain_port_files, fastdds_shm_files, orphaned_shm_files

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = os.environ.get("SPINN_FLIGHT_CHECKPOINT", "default")
EXTRA = tuple(os.environ.get("SPINN_FLIGHT_ARGS", "").split())     # e.g. "--no-monitor" (development)
KIND = "forest"
SEEDS = (1, 4)                  # forest courses with pillars on or near the straight line in the first 10 m
#: a link fault per course (the CI budget: a flight is ~30-50 s of wall time), each compared with the latency
#: comparison's SPINN flight over the same course on a good link
FAULT_FLIGHTS = (("outage", 1), ("degrade", 4))
GOAL_RADIUS = 10.0              # fly ~10 m: the goal counts as reached at x ~ 10
#: the drone computes 4x slower than the profiled machine (a small onboard computer): the whole
#: model then takes ~16 ms a frame against ~9 ms for SPINN's two-stage head, a latency
#: difference the pooled median shows above the DDS noise; offloads stay well inside their budget
SLOWDOWN = 4.0
MAX_TIME = 30.0                 # simulated s from take-off; ~1 m/s -> 10-15 s when nothing blocks
FLIGHT_TIMEOUT = 180            # wall s for one `spinn fly` (start-up + flight + teardown + outputs)
REPLAY_WARMUP = 20
DEADLINE_MS = yaml.safe_load((ROOT / "config" / "drone.yaml").read_text())["/**"]["ros__parameters"]["cloud"]["deadline_ms"]
RESUME_WITHIN_S = 3.0           # offloading back after the link recovers: Zenoh reconnect retries at most every
                                # 1 s and the drone needs the cloud's liveliness token; measured 0.3-1.2 s
# SPINN flights pin the plan: split 2, threshold 0.999 (launch_spec.FLIGHT_SPLIT / FLIGHT_THRESHOLD), so the cloud
# is used on every course whatever the planner would pick on this machine (with the shipped model and SLA it
# keeps everything on the drone: its early exits are accurate enough and this CPU fast); the monitor still runs
SPINN_ARGS = ("--set", "drone.follow_plans=false")
LOADED_SEED = 4                 # the course SPINN once collided on under CPU load (issue 13)
LOAD = ("--stress-cpus", "2")   # two busy loops: both cores of the CI machine taken for the whole flight
#: stale answers at every frame: the camera delivers 0.45 s late (the controller's speed then falls to ~40 %)
#: and the drone node freezes 300 ms every 2 s
STALE = ("--set", "sim.camera.latency_s=0.45", "--stall-drone", "300@2")
#: the latency comparison's SPINN flights, and the link faults', run a one-stage head: the shipped profile's head
#: at split 2 (stages 0-1 and their exits, 1.62 ms) is 86 % of the whole model without exits (1.88 ms; stage 0
#: alone is 0.78), so at split 2 SPINN's first answer is only ~1 ms sooner at 4x, inside the flights' noise (CI
#: once measured 16.2 against 15.1 ms); at split 1 (0.87 ms) the head skips half the model: ~4 ms at 4x. More
#: frames need the cloud there, which the fault flights want
LATENCY_ARGS = ("--set", "drone.split_point=1")
UNSEEN_KINDS = ("composite", "gates")   # scene families held out of the model's training data (docs/model.md)
UNSEEN_SEED = 1                 # both courses put an obstacle on the straight line ~6 m out
WALL_X = 5.0                    # test/system/blocked_wall_sim.py
WALL_THICKNESS = 0.3

pytestmark = pytest.mark.timeout(900)


def checkpoint() -> str:
    if CHECKPOINT == "default" and not default_checkpoint_path().is_file():
        pytest.fail(f"the trained checkpoint {default_checkpoint_path()} is not there: flights need a model that "
                    f"sees obstacles (SPINN_FLIGHT_CHECKPOINT=random:small:0 runs the plumbing only)", pytrace=False)
    return CHECKPOINT


class Flights:
    """Runs ``spinn fly`` once per (seed, mode, trace, kind) and keeps the results."""

    def __init__(self, root: Path):
        self.root = root
        self.done: dict[tuple, dict] = {}

    def get(self, seed: int, mode: str = "spinn", trace: str = "none", kind: str = KIND,
            max_time: float = MAX_TIME, extra: tuple[str, ...] = ()) -> dict:
        if mode == "spinn":
            extra = (*SPINN_ARGS, *extra)
        key = (seed, mode, trace, kind, max_time, extra)
        if key not in self.done:
            try:
                self.done[key] = self._fly(seed, mode, trace, kind, max_time, extra)
            except AssertionError as exc:       # a later test needing this flight fails for the same reason
                self.done[key] = exc
        if isinstance(self.done[key], AssertionError):
            raise self.done[key]
        return self.done[key]

    def _fly(self, seed, mode, trace, kind, max_time, extra) -> dict:
        out = self.root / f"{kind}-{seed}-{mode}-{trace}{f'-{len(self.done)}' if extra else ''}"
        argv = [sys.executable, "-m", "spinn_ros.tools.fly", "--quiet", "--out", str(out), "--checkpoint", checkpoint(),
                "--seed", str(seed), "--kind", kind, "--mode", mode, "--trace", trace, "--max-time", str(max_time),
                "--slowdown", str(SLOWDOWN),
                "--set", f"sim.goal_radius={GOAL_RADIUS}", *extra, *EXTRA]
        before = fastdds_shm_files()
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=FLIGHT_TIMEOUT)
        log = (out / "nodes.log").read_text() if (out / "nodes.log").is_file() else ""
        assert proc.returncode == 0, (f"spinn fly {' '.join(argv[3:])} failed ({proc.returncode}):\n{proc.stdout}\n"
                                      f"{proc.stderr}\n--- nodes ---\n{log[-4000:]}")
        summary = json.loads((out / "summary.json").read_text())
        # this flight's leftovers (other runs on a shared machine leave theirs in other domains at any time)
        leftover = domain_port_files(orphaned_shm_files(before), summary["ros_domain"])
        assert not leftover, f"FastDDS shared-memory files left behind by {out.name}: {sorted(leftover)}"
        if summary["nodes"]["dds_leftovers_removed"]:      # FastDDS's teardown race (docs/flight.md): visible here
            print(f"{out.name}: spinn fly removed unheld FastDDS files {summary['nodes']['dds_leftovers_removed']}")
        timeline = json.loads((out / "timeline.json").read_text())
        assert summary["nodes"]["clean"], f"{out.name}: nodes did not exit cleanly: {summary['nodes']}"
        assert summary["recording"].get("readable"), f"{out.name}: recording unreadable: {summary['recording']}"
        # frames arriving while the head is busy are dropped for the newest (by design); the full model on a
        # loaded 2-core machine drops up to ~10 %
        assert summary["frames"]["answered"] >= 0.75 * summary["frames"]["camera"] > 0, summary["frames"]
        print(f"{out.name}: {summary['outcome']['end_reason']}, {summary['outcome']['distance_flown_m']:.1f} m, "
              f"latency p50 {summary['control_latency_ms']['p50']:.1f} ms, shares {summary['frames']['share']}, "
              f"wall {summary['outcome']['wall_time_s']:.1f} s")
        return {"summary": summary, "timeline": timeline, "out": out}


@pytest.fixture(scope="module")
def flights(tmp_path_factory):
    return Flights(tmp_path_factory.mktemp("flights"))


def success(flight: dict) -> bool:
    o = flight["summary"]["outcome"]
    return o["reached_goal"] and o["collisions"] == 0


def command_gaps(flight: dict) -> tuple[float, float]:
    """Longest silence between commands from perception (wall s at the flight tool, and in image stamps)."""
    cmds = sorted((c for c in flight["timeline"]["commands"] if not c[4]), key=lambda c: c[0])   # by arrival
    wall = max((b[0] - a[0] for a, b in zip(cmds, cmds[1:])), default=0.0)
    stamps = sorted(c[1] for c in cmds)
    stamp = max((b - a for a, b in zip(stamps, stamps[1:])), default=0.0)
    return wall, stamp


def controller_config(flight: dict):
    """The drone's controller settings: config/drone.yaml (the flights override none of them)."""
    import yaml

    from spinn_ros.core.controller import ControllerConfig

    params = yaml.safe_load((ROOT / "config" / "drone.yaml").read_text())["/**"]["ros__parameters"]
    return ControllerConfig(**params["controller"])


def check_commands_follow_controller(flight: dict, name: str) -> None:
    """Replay the flight's results through the controller: every command's forward speed must be what
    DroNetController gives for its result, a refined result replacing the provisional one of its frame.

    Results and commands travel on separate topics, so the order the controller folded results in is
    read from the commands (each names its frame); per frame, results keep their order (provisional first).
    The replay knows what this process heard, not what the drone did: where it missed samples (a gap in
    a publisher's sequence numbers: the drone's shallow reliable history moved on while this process was
    starved of CPU) the replay's filters lose the drone's state, so it re-converges over REPLAY_WARMUP
    commands before comparing again. Losses are counted and bounded; every command after a complete
    stretch is compared.
    """
    from collections import defaultdict, deque

    from spinn_ros.core.controller import DroNetController

    config = controller_config(flight)
    commands = flight["timeline"]["commands"]           # in the drone's publication order (sequence numbers)
    results = flight["timeline"]["results"]
    per_stamp: dict[float, deque] = defaultdict(deque)
    for r in results:
        per_stamp[r[1]].append(r)
    lost_commands, lost_results = sequence_gaps([c[5] for c in commands]), sequence_gaps([r[7] for r in results])
    assert len(lost_commands) + len(lost_results) <= 0.02 * len(commands), \
        f"{name}: this process missed {len(lost_commands)} commands and {len(lost_results)} results"
    # this process may match the drone's command publisher after its first commands (DDS then repairs only the
    # writer's recent history): if the sequence does not start at 1 the replay starts at the first command seen,
    # with that frame's last results, and compares from REPLAY_WARMUP on (the filters forget their unknown
    # start: 0.5 ** 20 ~ 1e-6)
    complete = bool(commands) and commands[0][5] == 1
    first = commands[0][1] if commands else None
    seen_first = sum(1 for c in commands if c[1] == first)
    while not complete and first is not None and len(per_stamp[first]) > seen_first:
        per_stamp[first].popleft()
    compare_from = 0 if complete else REPLAY_WARMUP
    ctl = DroNetController(config)
    checked, last_used = 0, 0           # the sequence number of the last result replayed
    for i, (_t, stamp, vx, wz, watchdog, seq) in enumerate(commands):
        if seq - 1 in lost_commands:
            compare_from = max(compare_from, i + REPLAY_WARMUP)
        if watchdog:
            ctl.hover()
            continue
        if not per_stamp[stamp] and (i < compare_from or lost_results):
            compare_from = max(compare_from, i + REPLAY_WARMUP)
            continue                # its result was published before this process matched the drone, or missed
        assert per_stamp[stamp], f"{name}: command for frame {stamp} without a result before it"
        r = per_stamp[stamp].popleft()
        if any(last_used < lost < r[7] for lost in lost_results):
            # a result this process missed came since the last one replayed: the drone's controller took it
            # (it may even be the one behind this command: a provisional answer whose refinement is all that
            # was heard, as in a loaded CI run after a stall), so the replay's state is unknown for a while
            compare_from = max(compare_from, i + REPLAY_WARMUP)
        last_used = max(last_used, r[7])
        cmd = ctl.update(r[4], r[5], round(stamp * 1e9), provisional=r[2], age_s=r[8] / 1e3)
        ctl.commanded(round(stamp * 1e9) + round(r[8] * 1e6), wz)     # the yaw actually sent (goal term included)
        if r[4] >= config.critical_collision:
            assert vx == 0.0, f"{name}: collision probability {r[4]:.2f} but forward speed {vx}"
        if i < compare_from:
            continue
        assert cmd.reason != "stale", f"{name}: the drone acted on a result older than one it had used"
        assert abs(cmd.forward_speed - vx) < 2e-3, f"{name}: frame {stamp}: command ({vx}, {wz}), controller: {cmd}"
        # (the yaw rate also has the goal term, from odometry this test does not see: test_controller_mapping)
        checked += 1
    assert checked >= 0.8 * len([c for c in commands if not c[4]]) > 0


def sequence_gaps(seqs: list[int]) -> set[int]:
    """Sequence numbers missing between the first and the last one heard."""
    return set(range(min(seqs), max(seqs) + 1)) - set(seqs) if seqs else set()


# ------------------------------------------------------------------------------------ controller


def test_traces_refuse_loudly_without_root(monkeypatch, capsys, tmp_path):
    """`spinn fly --trace ...` where link emulation is impossible: a loud refusal, nothing started."""
    import spinn_ros.linkemu
    from spinn_ros.tools.fly import cli as fly_cli

    monkeypatch.setattr(spinn_ros.linkemu, "link_emulation_problem", lambda: "not running as root (euid=1000)")
    assert fly_cli.main(["--trace", "outage", "--checkpoint", "random:small:0", "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert "LINK TRACES NEED ROOT: this flight did NOT run." in err and "not running as root" in err
    assert not (tmp_path / "f").exists()
    assert fly_cli.main(["--trace", "no-such-trace.yaml", "--out", str(tmp_path / "g")]) == 2


# ------------------------------------------------------------------------------------ good link
def test_spinn_flies_as_well_as_device_only_with_lower_latency(flights):
    """Over several seeded courses the SPINN drone reaches the goal without collision at least as
    often as the same model run entirely on the drone, and its median control latency is lower (its
    head pinned at split 1: LATENCY_ARGS)."""
    results = {}
    for i, seed in enumerate(SEEDS):
        order = ("spinn", "device-only") if i % 2 == 0 else ("device-only", "spinn")   # load drift hits both
        for mode in order:
            results[seed, mode] = flights.get(seed, mode, extra=LATENCY_ARGS if mode == "spinn" else ())
    ok = {mode: [s for s in SEEDS if success(results[s, mode])] for mode in ("spinn", "device-only")}
    assert len(ok["spinn"]) >= len(ok["device-only"]), f"goal reached without collision on seeds {ok}"
    for seed in SEEDS:
        spinn, device = results[seed, "spinn"]["summary"], results[seed, "device-only"]["summary"]
        assert spinn["frames"]["refined"] > 0, f"seed {seed}: SPINN never used the cloud: {spinn['frames']}"
        assert device["frames"]["offloaded"] == 0 and device["frames"]["device"] == device["frames"]["answered"]

    def pooled(mode):
        return statistics.median(
            (f["t_command"] - f["t_image"]) * 1e3 for s in SEEDS for f in results[s, mode]["timeline"]["frames"]
            if f["t_command"] is not None)

    for (seed, mode), f in results.items():
        check_commands_follow_controller(f, f"seed {seed}, {mode}")
    spinn_ms, device_ms = pooled("spinn"), pooled("device-only")
    # staleness at each camera frame: at 15 Hz the answer in force is mostly the previous frame's (67 ms)
    staleness = [results[key]["summary"]["command_staleness_ms"]["p95"] for key in results]
    assert all(0 < x < 1000 for x in staleness), f"command staleness p95 per flight: {staleness}"
    # the margin: SPINN's first answer comes from the head (stage 0 and its exit), the baseline's from all 7
    # stages (~2.2x the compute, ~4 ms more at 4x); 1 ms is well below that difference
    assert spinn_ms + 1.0 < device_ms, f"median control latency: SPINN {spinn_ms:.1f} ms, device-only {device_ms:.1f} ms"


# ------------------------------------------------------------------------------------ link faults
@pytest.mark.netns
@pytest.mark.parametrize("trace, seed", FAULT_FLIGHTS)
def test_link_fault_mid_flight(flights, trace, seed):
    """A course with the cloud cut off mid-flight, or a link degrading to 0.3 Mbit/s / 300 ms /
    5 % loss and back: no collision the good-link flight did not have, no silence in the commands
    longer than the controller's timeout, and offloading back within RESUME_WITHIN_S of recovery."""
    from spinn_ros.testing.linkemu import require_root

    require_root()
    good = flights.get(seed, "spinn", extra=LATENCY_ARGS)
    f = flights.get(seed, "spinn", trace, extra=LATENCY_ARGS)
    s, name = f["summary"], f"seed {seed}, {trace}"
    link = s["link"]
    end = f["timeline"]["end_s"]
    faults = [e for e in link["events"] if e["source"] != "setup" and
              (not e["up"] or e["rate_mbit"] < 10 or e["loss"] > 0)]
    assert faults and faults[0]["t"] < end, f"{name}: the fault never happened in flight: {link['events']}"
    if good["summary"]["outcome"]["collisions"] == 0:
        assert s["outcome"]["collisions"] == 0, (f"{name}: collision at {s['outcome']['collision_positions']} "
                                                 f"on a course the good-link flight passed")
    check_commands_follow_controller(f, name)
    timeout = s["commands"]["controller_timeout_s"]
    wall_gap, stamp_gap = command_gaps(f)
    assert s["commands"]["watchdog_hovers"] == 0, f"{name}: the drone's watchdog had to hover: {s['commands']}"
    assert wall_gap <= timeout and stamp_gap <= timeout, \
        f"{name}: {wall_gap:.3f} s wall / {stamp_gap:.3f} s sim without a command (timeout {timeout} s)"
    # the fault was felt: no refined answer can come over a dead link, nor within the frame's deadline once
    # the round trip alone is longer than it; the frames that needed the cloud then were answered by the drone
    frames = f["timeline"]["frames"]
    deadline_s = DEADLINE_MS / 1e3
    worst = next(e["t"] for e in link["events"] if e["source"] != "setup" and
                 (not e["up"] or e["rtt_ms"] / 1e3 > deadline_s))
    back = link["recovered_at_s"]
    assert back is not None, f"{name}: the link never recovered during the flight: {link['events']}"
    during = [fr for fr in frames if worst + 0.3 <= fr["t_image"] <= back - 0.5 and fr["needs_cloud"]]
    assert during, f"{name}: no frame needed the cloud during the fault: nothing tested"
    refined_then = [fr["t_image"] for fr in during if fr["source"] == "cloud"]
    assert not refined_then, f"{name}: refined answers over a link that cannot deliver them: {refined_then}"
    # offloading is back: from RESUME_WITHIN_S after the recovery on, the frames that need the cloud (no
    # device exit sure enough) are refined by it again, not answered by the device alone
    later = [fr for fr in frames if fr["needs_cloud"] and fr["t_image"] >= back + RESUME_WITHIN_S]
    assert later, f"{name}: no frame needed the cloud from {back + RESUME_WITHIN_S:.1f} s to the end ({end:.1f} s)"
    refined = [fr for fr in later if fr["source"] == "cloud"]
    assert len(refined) >= 0.9 * len(later), \
        f"{name}: after recovery only {len(refined)} of {len(later)} frames needing the cloud were refined"


# ------------------------------------------------------------------------------------ blocked
def test_blocking_wall_ends_hovering_in_front_of_it(flights):
    """A wall across the whole flight area: the drone stops in front of it and hovers there,
    never touching it, until the flight's time limit."""
    f = flights.get(0, "spinn", kind="blocked", max_time=20.0,
                    extra=("--sim-exec", str(ROOT / "test" / "system" / "blocked_wall_sim.py")))
    s = f["summary"]
    assert s["outcome"]["collisions"] == 0, f"flew into the wall at {s['outcome']['collision_positions']}"
    assert s["outcome"]["end_reason"] == "time_limit", s["outcome"]
    odo = f["timeline"]["odometry"]           # (sim t, x, y, z, yaw, forward speed)
    t_end = odo[-1][0]
    x_face = WALL_X - WALL_THICKNESS / 2
    assert all(p[1] < x_face - 0.15 for p in odo), f"closest approach {max(p[1] for p in odo):.2f} m (wall {x_face})"
    assert max(p[1] for p in odo) > x_face - 2.5, "stopped far from the wall: it never approached it"
    last = [p for p in odo if p[0] >= t_end - 4.0]
    drift = max(abs(a[1] - b[1]) + abs(a[2] - b[2]) for a in last for b in last)
    assert drift < 0.3 and all(abs(p[5]) < 0.15 for p in last), f"not hovering in the last 4 s: drift {drift:.2f} m"
    cmds = [c[2] for c in f["timeline"]["commands"] if c[0] >= f["timeline"]["end_s"] - 4.0]
    assert cmds and statistics.median(cmds) < 0.05, f"commanded forward speeds in the last 4 s: {cmds}"


# ---------------------------------------------------------------------------- under contention
def check_no_collision(f: dict, name: str) -> None:
    """Reaching the time limit is acceptable under stress; a collision never is."""
    o = f["summary"]["outcome"]
    assert o["collisions"] == 0, f"{name}: collision at {o['collision_positions']} ({o['end_reason']})"


@pytest.mark.parametrize("mode", ["spinn", "device-only"])
def test_no_collision_with_both_cores_loaded(flights, mode):
    """Two busy loops take both cores for the whole flight: no collision, commands still follow the
    controller (their speeds scaled by the age of the answers they act on)."""
    f = flights.get(LOADED_SEED, mode, extra=LOAD)
    assert f["summary"]["stress"]["cpu_hogs"] == 2
    check_no_collision(f, f"loaded {mode}")
    check_commands_follow_controller(f, f"loaded {mode}")


@pytest.mark.parametrize("kind", UNSEEN_KINDS)
def test_courses_of_families_never_trained_on_are_flown_without_collision(flights, kind):
    """Courses built only from scene families the model never saw in training (composite shapes,
    gates and windowed walls), with obstacles on the straight line to the goal: the drone goes
    around them (or hovers where it finds no way, until the time limit) and never collides."""
    from spinn_ros.sim.families import blocks_line
    from spinn_ros.sim.world import generate_course

    course = generate_course(UNSEEN_SEED, kind)
    ahead = [o.center[0] for o in course.obstacles if blocks_line([o], course.start[2]) and o.center[0] < 20 - GOAL_RADIUS]
    assert ahead, f"{kind} seed {UNSEEN_SEED}: nothing on the straight line within the flown part: nothing tested"
    f = flights.get(UNSEEN_SEED, "spinn", kind=kind)
    name = f"{kind} seed {UNSEEN_SEED}"
    check_no_collision(f, name)
    check_commands_follow_controller(f, name)
    odo = f["timeline"]["odometry"]
    assert max(p[1] for p in odo) > min(ahead) - 2.0, f"{name}: never came near the obstacle at x = {min(ahead)}"


def test_no_collision_on_stale_answers(flights):
    """Loaded cores, a camera 0.45 s late and a drone frozen at intervals: every answer is stale, the
    drone slows (and hovers past controller.max_age_s) instead of flying blind into a pillar."""
    f = flights.get(LOADED_SEED, "spinn", extra=(*LOAD, *STALE))
    s, name = f["summary"], "stale answers"
    assert s["stress"]["drone_stalls"] >= 2, s["stress"]
    check_no_collision(f, name)
    check_commands_follow_controller(f, name)
    config = controller_config(f)
    ages = sorted(r[8] / 1e3 for r in f["timeline"]["results"])
    assert ages[len(ages) // 2] > config.slow_age_s, "the camera latency made the answers stale"
    fastest = max(c[2] for c in f["timeline"]["commands"])
    assert fastest < config.max_forward_speed * 0.6, f"flew at {fastest} m/s on answers {ages[len(ages) // 2]} s old"
