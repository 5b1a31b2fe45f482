"""One flight: the emulated link (optional), the nodes, the listener, the progress line and a
clean teardown; ``Flight.run()`` returns what the listener logged."""
from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ...linkemu.netns import NetnsSwitch
from ..ports import free_port
from .analysis import SOURCES
from .listener import FlightListener, FlightLog
from .recording import Recorder
from .stress import CpuHogs, DroneStaller, parse_stall
from .traces import GOOD_LINK, from_takeoff, load_trace

#: simulated seconds the simulator may hover while the other nodes start
STARTUP_ALLOWANCE_S = 120.0
#: the simulator's node name (launch_spec.sim)
SIMULATOR_NODE = "spinn_sim"


def stop_nodes(procs: list) -> dict[str, int]:
    """A clean ROS shutdown of every node (SIGINT, then SIGTERM, SIGKILL); their exit statuses.

    The simulator goes first, alone: it writes the fastest streams (camera, /clock), and once
    it is gone nothing runs on sim time, so the others stop together while quiet, with less
    traffic in flight to peers that are leaving. (This did not end the rare FastDDS port file
    left after a flight: see docs/flight.md.)"""
    first = [p for p in procs if p.name == SIMULATOR_NODE]
    codes = {p.name: p.stop(grace_s=15.0) for p in first}
    rest = [p for p in procs if p not in first]
    with ThreadPoolExecutor(max_workers=max(1, len(rest))) as pool:
        codes.update(zip((p.name for p in rest), pool.map(lambda p: p.stop(grace_s=15.0), rest)))
    return {p.name: codes[p.name] for p in procs}


class FlightError(RuntimeError):
    """The flight could not go on: a node died, a wait timed out, the link trace failed."""


class Flight:
    """One episode: link (optional), nodes, listener, progress; ``run()`` returns the log."""

    def __init__(self, opts, out: Path, say=print):
        self.opts, self.out, self.say = opts, out, say
        self.trace = load_trace(opts.trace)
        self.link = None
        self.netns: NetnsSwitch | None = None
        self.procs: list = []
        self.log = FlightLog()
        self.recorder: Recorder | None = None
        self.exit_codes: dict[str, int] = {}
        self.dds_leftovers: list[str] = []        # FastDDS files removed at teardown (_remove_dds_leftovers)
        self._shm_before: set[str] = set()
        self.link_events: list = []
        self.t_takeoff: float | None = None
        self.t_end: float | None = None
        self.t_nodes_up: float | None = None
        self.t_start = time.monotonic()
        self.sim_takeoff: float | None = None
        self.time_limit = False
        self.startup: dict = {}
        self.notes: list[str] = []
        self._node_log = None
        self._context = None
        self._spinner = None
        self.listener = None
        self.domain: int | None = None
        self.hogs: CpuHogs | None = None
        self.certs_dir = (out / "certs").resolve()
        self.staller: DroneStaller | None = None

    # -- helpers
    def _sink(self, line: str) -> None:
        if self._node_log:
            self._node_log.write(line + "\n")
            self._node_log.flush()
        if self.opts.verbose:
            print(line, flush=True)

    def _start(self, spec, side: str) -> None:
        from ..launch import ChildProcess

        argv = spec.command()
        if self.opts.sim_exec and spec.executable == "sim_node":
            argv = [sys.executable, self.opts.sim_exec, *spec.ros_args()]
        env = self.env
        if self.link is not None and side == "cloud":
            argv = self.link.command("cloud", argv)
            env = cloud_host_environment(self.env)
        self.procs.append(ChildProcess(spec.name, argv, env=env, sink=self._sink))

    def _check_nodes(self) -> None:
        for p in self.procs:
            code = p.poll()
            if code is not None:
                tail = "\n".join(p.lines[-15:])
                raise FlightError(f"node {p.name} exited with status {code} during the flight:\n{tail}")

    def _wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            self._check_nodes()
            if time.monotonic() > deadline:
                raise FlightError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.05)

    def specs(self, endpoint: str):
        from .. import launch_spec

        o = self.opts
        overrides = {k: dict(v) for k, v in o.overrides.items()}
        if o.slowdown != 1.0:      # (the monitor reads it from the drone)
            overrides.setdefault("drone", {}).setdefault("emulate.slowdown", float(o.slowdown))
        # the simulator runs (hovering) while the other nodes start: its own limit leaves room for that,
        # the flight tool ends the flight max_time after take-off
        overrides.setdefault("sim", {}).setdefault("max_duration_s", float(o.max_time) + STARTUP_ALLOWANCE_S)
        for node in ("drone", "cloud", "monitor"):
            overrides.setdefault(node, {}).update(self.security_params(node, overrides.get(node, {})))
        checkpoint = o.checkpoint if o.checkpoint == "default" or o.checkpoint.startswith("random:") \
            else str(Path(o.checkpoint).resolve())
        specs = launch_spec.flight_system(course_seed=o.seed, course_kind=o.kind, real_time_factor=1.0,
                                   checkpoint=checkpoint, mode=o.mode, split_point=o.split, cloud_endpoint=endpoint,
                                   sla=str(Path(o.sla).resolve()) if o.sla else "", with_monitor=not o.no_monitor,
                                   overrides=overrides)
        return specs

    def security_params(self, node: str, given: dict) -> dict:
        """The link's security for ``node``: plain (said loudly), or mtls with this run's certificates."""
        if self.opts.security == "plain":
            return {"zenoh.security": "plain"}
        return {"zenoh.certs": given.get("zenoh.certs", str(self.certs_dir))}

    def make_certs(self, cloud_host: str) -> str:
        """The run's CA and certificates (cloud, the drone 'default' and its monitor) in OUT/certs, unless
        --set gives the nodes a directory of their own; returns the endpoint's scheme."""
        from ..certs import ensure_certs

        if self.opts.security == "plain":
            self.say("WARNING: --security plain: the drone<->cloud link has no authentication and no access control")
            return "tcp"
        if "zenoh.certs" not in self.opts.overrides.get("cloud", {}):
            ensure_certs(self.certs_dir, ["default"], [cloud_host])
        return "tls"

    # -- the episode
    def run(self) -> FlightLog:
        from .. import launch_spec
        from ..harness import domain_id_for_run, fastdds_shm_files

        o = self.opts
        self._node_log = open(self.out / "nodes.log", "w")
        domain = domain_id_for_run()
        self.domain = domain
        self._shm_before = fastdds_shm_files()
        self.env = {"ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
                    "PYTHONUNBUFFERED": "1", "RCUTILS_LOGGING_BUFFERED_STREAM": "0",
                    **launch_spec.transport_environment()}
        os.environ.update(self.env)
        try:
            if o.stress_cpus:
                self.hogs = CpuHogs(o.stress_cpus)
            if self.trace is not None:
                from ...linkemu import EmulatedLink, pid_prefix, remove_stale

                remove_stale("spinnfly")
                self.link = EmulatedLink(prefix=pid_prefix("spinnfly"), **{k: v for k, v in GOOD_LINK.items()},
                                         outage_mode=o.outage_mode)
                self.link.open()
                endpoint = f"{self.make_certs(self.link.cloud_ip)}/{self.link.cloud_ip}:7447"
                self.netns = NetnsSwitch(self.link.ns("drone"))
                self.say(f"link emulation: cloud in netns {self.link.ns('cloud')} ({self.link.cloud_ip}), drone side "
                         f"in {self.link.ns('drone')} ({self.link.drone_ip}); trace {self.trace.name!r} "
                         f"({self.trace.duration_s:.0f} s from take-off)")
            else:
                endpoint = f"{self.make_certs('127.0.0.1')}/127.0.0.1:{free_port()}"
            specs = self.specs(endpoint)
            self._fly(specs, domain)
        finally:
            if self.t_end is None:        # interrupted or failed: the flight ends here, not at teardown
                self.t_end = time.monotonic()
            self._teardown()
        return self.log

    def _fly(self, specs, domain: int) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.signals import SignalHandlerOptions

        from ..harness import note_dds_start

        o = self.opts
        self._context = Context()
        note_dds_start()
        # no rclpy signal handlers: Ctrl-C / SIGTERM raise here and the teardown stops every node cleanly
        rclpy.init(context=self._context, domain_id=domain, signal_handler_options=SignalHandlerOptions.NO)
        node = Node("spinn_fly", context=self._context)
        self._node = node
        executor = SingleThreadedExecutor(context=self._context)
        executor.add_node(node)
        self._executor = executor
        self.recorder = Recorder(self.out / "recording")
        self.listener = FlightListener(node, self.log, self.recorder)
        self._spinner = threading.Thread(target=self._spin, daemon=True)
        self._spinner.start()

        sim_spec = next(s for s in specs if s.executable == "sim_node")
        others = [s for s in specs if s is not sim_spec]
        names = ", ".join(s.name for s in specs)
        self.say(f"ROS domain {domain}; nodes: {names}; mode {o.mode}; course {o.kind}:{o.seed}; "
                 f"checkpoint {o.checkpoint}")
        t0 = time.monotonic()
        # all at once, the simulator (the slowest to start) first: it hovers until the first command. The
        # drone creates its result and command publishers before its camera subscription, so this process
        # matches them before the drone can see a frame, and the recording has every command.
        for spec in [sim_spec, *others]:
            self._start(spec, "cloud" if spec.executable == "cloud_node" else "drone")

        def drone_publishers_matched() -> bool:
            return all(node.count_publishers(t) >= 1 for t in ("/spinn/result", "/X3/gazebo/command/twist"))

        self._wait(drone_publishers_matched, 120, "the drone node's result and command publishers")
        t_drone = time.monotonic()

        def drone_listening() -> bool:
            return any(i.node_name == "spinn_drone" for i in node.get_subscriptions_info_by_topic("/camera"))

        self._wait(drone_listening, 120, "the drone node to subscribe to /camera")
        if o.mode != "device-only":
            drone_proc = next(p for p in self.procs if p.name == "spinn_drone")

            def cloud_seen() -> bool:   # (its diagnostics run on sim time: silent until the simulator runs)
                return any("cloud servers alive: ['" in line for line in list(drone_proc.lines))

            self._wait(cloud_seen, 120, "the drone to see the cloud (Zenoh liveliness)")
        self._wait(lambda: self.log.course is not None and self.log.image_arrival, 120,
                   "the simulator's course and first camera frame")
        self.t_nodes_up = time.monotonic()
        self._wait(lambda: any(not c[4] for c in self.log.commands), 60, "the drone's first command")
        self.startup = {"drone_publishers_s": round(t_drone - t0, 2), "first_frame_s": round(self.t_nodes_up - t0, 2),
                        "first_command_s": round(time.monotonic() - t0, 2)}
        self.say(f"all nodes up and the drone commanding after {time.monotonic() - t0:.1f} s "
                 f"(drone {t_drone - t0:.1f} s, first frame {self.t_nodes_up - t0:.1f} s); flying")
        with self.log.lock:
            self.t_takeoff = min(c[0] for c in self.log.commands if not c[4])     # its arrival here
        late = time.monotonic() - self.t_takeoff
        self.startup["noticed_takeoff_after_s"] = round(late, 3)
        player = self.link.play(from_takeoff(self.trace, late)) if self.link is not None else None
        stall = parse_stall(o.stall_drone)
        if stall is not None:
            drone_pid = next(p for p in self.procs if p.name == "spinn_drone").proc.pid   # its own process group
            self.staller = DroneStaller(drone_pid, *stall)
        self.sim_takeoff = self.log.sim_time
        deadline = self.t_takeoff + o.max_time * 1.5 + 30.0
        next_line = self.t_takeoff
        while self.log.episode_end is None:
            if self.log.sim_time - self.sim_takeoff >= o.max_time:
                self.time_limit = True
                break
            self._check_nodes()
            if player is not None and player.error is not None:
                raise FlightError(f"link trace failed: {player.error}")
            now = time.monotonic()
            if now > deadline:
                self.notes.append(f"no episode end within {deadline - self.t_takeoff:.0f} s wall: stopped")
                break
            if now >= next_line:
                self._progress_line()
                next_line += 1.0
            time.sleep(0.05)
        self.t_end = time.monotonic()
        time.sleep(0.5)     # trailing finals (a refined answer in flight) and diagnostics
        self._progress_line(final=True)
        if self.link is not None:
            self.link.stop_trace()
            self.link_events = [(e.t, e.state, e.source) for e in self.link.events]

    def _spin(self) -> None:
        try:
            self._executor.spin()
        except Exception:  # noqa: BLE001 - the context is shut down at teardown
            pass

    def _progress_line(self, final: bool = False) -> None:
        if self.opts.quiet:
            return
        log = self.log
        with log.lock:
            odom = log.odom[-1] if log.odom else None
            finals = list(log.finals.values())
            frames = len(log.image_arrival)
        prog = log.progress
        n = max(len(finals), 1)
        share = Counter(SOURCES[f["source"]] for f in finals)
        plan = finals[-1]["plan_id"] if finals else 0
        x = f"{odom[1]:5.1f}" if odom else "  -  "
        v = f"{odom[5]:4.2f}" if odom else " -  "
        line = (f"t={log.sim_time:5.1f}s x={x}m to-goal={prog.get('distance_to_goal', float('nan')):5.1f}m "
                f"v={v}m/s frames={frames:4d} device={share['device'] / n:4.0%} cloud={share['cloud'] / n:4.0%} "
                f"fallback={share['fallback'] / n:4.0%} plan={plan}")
        if sys.stdout.isatty() and not self.opts.verbose:
            print("\r" + line, end="\n" if final else "", flush=True)
        else:
            print(line, flush=True)

    def _teardown(self) -> None:
        errors = []
        if self.staller is not None:
            self.staller.close()
        if self.hogs is not None:
            self.hogs.close()
        if self.link is not None:
            try:
                self.link.stop_trace()
            except Exception as exc:  # noqa: BLE001
                errors.append(f"trace: {exc}")
        self.exit_codes = stop_nodes(self.procs)
        if self.recorder is not None:
            self.recorder.close()
        if self._context is not None:
            import rclpy

            self._executor.shutdown()
            self._node.destroy_node()
            rclpy.try_shutdown(context=self._context)
            if self._spinner is not None:
                self._spinner.join(timeout=5.0)
        self._remove_dds_leftovers()
        if self.netns is not None:
            self.netns.leave()
        if self.link is not None:
            if not self.link_events:
                self.link_events = [(e.t, e.state, e.source) for e in self.link.events]
            try:
                self.link.close()
            except Exception as exc:  # noqa: BLE001
                errors.append(f"link teardown: {exc}")
        if self._node_log:
            self._node_log.close()
        self.notes += errors

    def _remove_dds_leftovers(self) -> None:
        """Every participant of the flight is gone: FastDDS files of its domain that nobody holds are
        leftovers (a rare FastDDS race at teardown, docs/flight.md); removed and reported. Not after
        an unclean stop: what a dying node left stays, for the flight's checks to see."""
        from ..harness import remove_domain_leftovers

        if self.domain is None or not self.exit_codes or any(c != 0 for c in self.exit_codes.values()):
            return
        self.dds_leftovers = remove_domain_leftovers(self._shm_before, self.domain)
        if self.dds_leftovers:
            self.notes.append(f"removed FastDDS files of domain {self.domain} that no process held after every "
                              f"node exited cleanly: {', '.join(self.dds_leftovers)}")


def cloud_host_environment(env: dict) -> dict:
    """The environment of the cloud behind the emulated link: DDS over UDP only.

    The cloud's network namespace stands for another machine, but /dev/shm is this one's, so
    FastDDS's shared-memory transport joined it to the drone side's participants around the
    emulated link; at teardown that left port files of exited participants in /dev/shm (two
    CI runs, degrade flights). Over UDP it stays behind the link, like a real cloud."""
    from ...core.resources import config_file
    from ..launch_spec import DDS_PROFILE_VARIABLES

    return {**env, **dict.fromkeys(DDS_PROFILE_VARIABLES, str(config_file("fastdds_udp.xml")))}

