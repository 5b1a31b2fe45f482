"""The quadrotor flight simulator: a PyFlyt QuadX flying a seeded obstacle course.

Pure Python (no rclpy, no torch): ``spinn_ros/nodes/sim_node.py`` wraps it for ROS.
The course, the ground and the onboard camera are the ones ``world.py`` defines for
the training data, so frames seen in flight come from the same distribution.

* Commands are body-frame velocities (forward, lateral, vertical) and a yaw rate in
  the ROS convention (REP 103: x forward, y left, z up, positive yaw rate = turn
  left), i.e. what gz-sim's MulticopterVelocityControl takes. PyFlyt's mode 5 flies
  body-frame velocities but its vertical loop sinks, so an altitude loop closes
  around a target height that starts at the course's flight altitude and moves with
  the commanded vertical speed (vz = 0 holds height).
* ``step(dt)`` advances whole control periods (1/120 s; physics runs at 240 Hz) and
  returns the events that happened: collisions (with an obstacle or the ground),
  goal reached, out of bounds, timeout, and the episode end. After the episode ends
  the simulation is frozen (like a crash stopping a run); ``end_on_collision=False``
  reports collisions and flies on.
* Deterministic per seed: the course comes from ``world.generate_course(seed)`` and
  PyFlyt's motor noise draws from a generator seeded with the same seed.

``python -m spinn_ros.sim.quadrotor`` measures the real-time factor.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

# PyFlyt JIT-compiles its PIDs and motor model with numba in every process (no cache):
# ~8.5 s before the first step. Without JIT physics still runs ~9x real time and the
# camera dominates the cost (see docs/simulation.md), so short-lived processes (tests,
# launches) start in ~1 s instead. NUMBA_DISABLE_JIT=0 in the environment keeps JIT.
# Must be set before numba is first imported, hence here, above the PyFlyt import.
os.environ.setdefault("NUMBA_DISABLE_JIT", "1")

from . import world  # noqa: E402

PHYSICS_HZ = 240                 # pybullet's recommended step; PyFlyt warns on anything else
CONTROL_HZ = 120                 # QuadX default control loop: one Aviary.step()
MODE_BODY_VELOCITY = 5           # PyFlyt QuadX flight mode 5: setpoint [u, v, yaw rate, vz]


def camera_rates() -> tuple[int, ...]:
    """Camera rates PyFlyt can render at: an image every whole number of physics steps."""
    return tuple(hz for hz in range(1, CONTROL_HZ + 1) if PHYSICS_HZ % hz == 0)


@dataclass(frozen=True)
class FlightConfig:
    seed: int = 0
    kind: str | None = None                     # a world.COURSE_KINDS entry; None: drawn from the seed
    camera_hz: int = 15                         # 0: no camera; else one of camera_rates()
    camera_size: tuple[int, int] = (128, 128)   # (height, width), PyFlyt's order
    end_on_collision: bool = True
    goal_radius: float = 1.0                    # horizontal distance to the goal that counts as reached
    max_duration_s: float = 0.0                 # 0: no time limit
    bounds_margin: float = 2.0                  # how far beyond the course (start..goal, field width) is "out"
    ceiling: float = 5.0                        # flying above this is out of bounds
    max_speed: float = 5.0                      # |horizontal command| limit, m/s
    max_yaw_rate: float = 3.0                   # rad/s
    max_climb_rate: float = 1.0                 # m/s
    altitude_kp: float = 2.0                    # altitude loop: vz = kp * error + ki * integral
    altitude_ki: float = 1.0

    def __post_init__(self):
        if self.camera_hz and self.camera_hz not in camera_rates():
            raise ValueError(f"camera_hz={self.camera_hz} must be 0 or divide {PHYSICS_HZ}: {camera_rates()}")
        if self.kind is not None and self.kind not in world.COURSE_KINDS:
            raise ValueError(f"unknown course kind {self.kind!r}; choose one of {world.COURSE_KINDS}")

    @property
    def camera(self) -> world.CameraSpec:
        return dataclasses.replace(world.DRONE_CAMERA, resolution=tuple(self.camera_size))


@dataclass(frozen=True)
class DroneState:
    time: float
    position: tuple[float, float, float]               # world frame (z up)
    rpy: tuple[float, float, float]                    # pybullet Euler (roll, pitch, yaw); yaw CCW
    quaternion: tuple[float, float, float, float]      # (x, y, z, w), world frame
    velocity_body: tuple[float, float, float]          # x forward, y left, z up
    angular_velocity_body: tuple[float, float, float]

    @property
    def yaw(self) -> float:
        return self.rpy[2]


@dataclass(frozen=True)
class Progress:
    distance_travelled: float     # path length flown, m
    distance_to_goal: float       # horizontal, m
    fraction: float               # along the start->goal line, clipped to [0, 1]
    goal_reached: bool


@dataclass(frozen=True)
class Event:
    kind: str                                  # collision | goal_reached | out_of_bounds | timeout | episode_end
    time: float
    position: tuple[float, float, float]
    detail: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"event": self.kind, "time": round(self.time, 6),
                "position": [round(v, 4) for v in self.position], **self.detail}


@dataclass
class _Command:
    forward: float = 0.0
    lateral: float = 0.0
    vz: float = 0.0
    yaw_rate: float = 0.0


class FlightSim:
    """One QuadX in an Aviary holding one course; see the module docstring."""

    def __init__(self, config: FlightConfig = FlightConfig()):
        from PyFlyt.core import Aviary  # imported here: after NUMBA_DISABLE_JIT is settled

        self.config = config
        self.course = world.generate_course(config.seed, config.kind)
        self.camera_spec = config.camera
        options = {"use_camera": bool(config.camera_hz)}
        if config.camera_hz:
            c = self.camera_spec
            options.update(camera_fps=config.camera_hz, camera_resolution=c.resolution,
                           camera_FOV_degrees=c.fov_deg, camera_angle_degrees=c.angle_deg,
                           use_gimbal=c.use_gimbal, camera_position_offset=np.asarray(c.position_offset))
        with contextlib.redirect_stdout(io.StringIO()):  # Aviary prints terminal escape codes
            self.aviary = Aviary(start_pos=np.array([self.course.start]), start_orn=np.zeros((1, 3)),
                                 drone_type="quadx", drone_options=options, physics_hz=PHYSICS_HZ,
                                 np_random=np.random.default_rng(config.seed))
        self.obstacle_ids = world.build_course(self.aviary, self.course)
        self.aviary.register_all_new_bodies()
        self.aviary.set_mode(MODE_BODY_VELOCITY)
        self._drone = self.aviary.drones[0]
        self._bodies = {self.aviary.planeId: None, **{b: i for i, b in enumerate(self.obstacle_ids)}}
        self._touching: set[int] = set()
        self._cmd = _Command()
        self._z_target = self.course.start[2]
        self._z_integral = 0.0
        self._travelled = 0.0
        self._last_pos = np.array(self.course.start, dtype=float)
        self.collisions = 0
        self.done = False
        self.end_reason: str | None = None
        self.frame_seq = 0
        self.frame_time = 0.0
        if config.camera_hz:
            self._drone.update_last(0)   # Aviary rendered before the course existed: render again

    # -- time -----------------------------------------------------------------------
    @property
    def time(self) -> float:
        return self.aviary.physics_steps / PHYSICS_HZ

    @property
    def time_ns(self) -> int:
        return self.aviary.physics_steps * 1_000_000_000 // PHYSICS_HZ

    @property
    def frame_time_ns(self) -> int:
        return round(self.frame_time * 1e9)

    # -- commands ---------------------------------------------------------------------
    def set_command(self, forward_speed: float, yaw_rate: float, vz: float = 0.0, lateral: float = 0.0) -> None:
        """Body-frame velocities (m/s) and yaw rate (rad/s, positive = left), clipped to the limits."""
        c = self.config
        speed = math.hypot(forward_speed, lateral)
        scale = c.max_speed / speed if speed > c.max_speed else 1.0
        self._cmd = _Command(forward=forward_speed * scale, lateral=lateral * scale,
                             vz=float(np.clip(vz, -c.max_climb_rate, c.max_climb_rate)),
                             yaw_rate=float(np.clip(yaw_rate, -c.max_yaw_rate, c.max_yaw_rate)))

    def hover(self) -> None:
        self._cmd = _Command()

    # -- stepping ---------------------------------------------------------------------
    def step(self, dt: float = 1.0 / CONTROL_HZ) -> list[Event]:
        """Advance ``dt`` seconds (rounded to whole control periods, at least one)."""
        events: list[Event] = []
        for _ in range(max(1, round(dt * CONTROL_HZ))):
            if self.done:
                break
            events += self._control_step()
        return events

    def _control_step(self) -> list[Event]:
        first_physics_step = self.aviary.physics_steps
        self.aviary.set_setpoint(0, self._setpoint())
        self.aviary.step()
        self._note_frame(first_physics_step)
        pos = self._drone.state[3]
        self._travelled += float(np.linalg.norm(pos - self._last_pos))
        self._last_pos = pos.copy()
        return self._check_episode(self._collision_events())

    def _setpoint(self) -> np.ndarray:
        """PyFlyt mode-5 setpoint with the altitude loop closed on the world height."""
        c, cmd, dt = self.config, self._cmd, 1.0 / CONTROL_HZ
        # no upper clamp: climbing past the ceiling must end the episode, not be hidden
        self._z_target = max(self._z_target + cmd.vz * dt, 0.0)
        error = self._z_target - float(self._drone.state[3][2])
        # integral clamped so that it can at most cancel PyFlyt's vertical sag, not wind up
        self._z_integral = float(np.clip(self._z_integral + error * dt, -0.5, 0.5))
        vz = cmd.vz + c.altitude_kp * error + c.altitude_ki * self._z_integral
        vz = float(np.clip(vz, -c.max_climb_rate, c.max_climb_rate))
        return np.array([cmd.forward, cmd.lateral, cmd.yaw_rate, vz])

    def _note_frame(self, first_physics_step: int) -> None:
        """PyFlyt rendered during this step if a physics step hit its camera period."""
        if not self.config.camera_hz:
            return
        ratio = self._drone.physics_camera_ratio
        rendered = [k for k in range(first_physics_step, self.aviary.physics_steps) if k % ratio == 0]
        if rendered:
            self.frame_seq += 1
            self.frame_time = (rendered[-1] + 1) / PHYSICS_HZ   # rendered after that physics step

    def _collision_events(self) -> list[Event]:
        """One event per body the drone starts touching (Aviary's contact_array, this step)."""
        row = self.aviary.contact_array[self._drone.Id]
        touching = {int(b) for b in np.flatnonzero(row) if int(b) in self._bodies}
        started = sorted(touching - self._touching)
        self._touching = touching
        events = []
        for body in started:
            index = self._bodies[body]
            if index is None:
                detail = {"with": "ground", "obstacle": None}
            else:
                o = self.course.obstacles[index]
                detail = {"with": "obstacle", "obstacle": index, "obstacle_kind": o.kind,
                          "obstacle_center": [round(v, 4) for v in o.center]}
            self.collisions += 1
            events.append(Event("collision", self.time, self._position(), detail))
        return events

    def _check_episode(self, events: list[Event]) -> list[Event]:
        c, t, pos = self.config, self.time, self._position()
        reason = None
        if events and c.end_on_collision:
            reason = "collision"
        elif self.progress().goal_reached:
            reason = "goal_reached"
            events.append(Event("goal_reached", t, pos, {"distance_travelled": round(self._travelled, 4)}))
        elif not self._in_bounds(pos):
            reason = "out_of_bounds"
            events.append(Event("out_of_bounds", t, pos, {"bounds": self.flight_bounds()}))
        elif c.max_duration_s and t >= c.max_duration_s:
            reason = "timeout"
            events.append(Event("timeout", t, pos, {"max_duration_s": c.max_duration_s}))
        if reason:
            self.done, self.end_reason = True, reason
            p = self.progress()
            events.append(Event("episode_end", t, pos, {
                "reason": reason, "collisions": self.collisions, "distance_travelled": round(p.distance_travelled, 4),
                "distance_to_goal": round(p.distance_to_goal, 4), "progress": round(p.fraction, 4)}))
        return events

    # -- course geometry ------------------------------------------------------------------
    def flight_bounds(self) -> dict:
        """The box the drone may fly in: start..goal and the field's width, plus the margin."""
        c, (sx, _, _), (gx, _, _) = self.config, self.course.start, self.course.goal
        xmin, xmax, ymin, ymax = self.course.bounds
        m = c.bounds_margin
        return {"x": [min(sx, xmin) - m, max(gx, xmax) + m], "y": [ymin - m, ymax + m], "z_max": c.ceiling}

    def _in_bounds(self, pos) -> bool:
        b = self.flight_bounds()
        return b["x"][0] <= pos[0] <= b["x"][1] and b["y"][0] <= pos[1] <= b["y"][1] and pos[2] <= b["z_max"]

    def describe(self) -> dict:
        """Everything a tool needs to draw the course (JSON-ready)."""
        return {"seed": self.course.seed, "kind": self.course.kind, "start": list(self.course.start),
                "goal": list(self.course.goal), "goal_radius": self.config.goal_radius,
                "field": list(self.course.bounds), "flight_bounds": self.flight_bounds(), "walls": self.course.walls,
                "obstacles": [dataclasses.asdict(o) for o in self.course.obstacles]}

    # -- observations -------------------------------------------------------------------
    def _position(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in self._drone.state[3])

    def state(self) -> DroneState:
        s = self._drone.state
        rpy = tuple(float(v) for v in s[1])
        return DroneState(time=self.time, position=self._position(), rpy=rpy,
                          quaternion=tuple(self.aviary.getQuaternionFromEuler(rpy)),
                          velocity_body=tuple(float(v) for v in s[2]),
                          angular_velocity_body=tuple(float(v) for v in s[0]))

    def progress(self) -> Progress:
        pos = np.asarray(self._position()[:2])
        start, goal = np.asarray(self.course.start[:2]), np.asarray(self.course.goal[:2])
        line = goal - start
        to_goal = float(np.linalg.norm(goal - pos))
        fraction = float(np.clip(np.dot(pos - start, line) / np.dot(line, line), 0.0, 1.0))
        return Progress(self._travelled, to_goal, fraction, to_goal <= self.config.goal_radius)

    def camera_frame(self) -> np.ndarray:
        """The latest onboard frame, RGB uint8 (H, W, 3), rendered at ``frame_time``."""
        if not self.config.camera_hz:
            raise RuntimeError("the camera is off (camera_hz=0)")
        rgba = np.asarray(self._drone.rgbaImg, dtype=np.uint8)
        return rgba.reshape(*self.camera_spec.resolution, 4)[:, :, :3].copy()

    def close(self) -> None:
        with contextlib.suppress(Exception):   # already disconnected
            self.aviary.disconnect()


# ------------------------------------------------------------------------------------
# Real-time factor benchmark
# ------------------------------------------------------------------------------------


def measure_rtf(config: FlightConfig, seconds: float) -> dict:
    """Circle near the start (1 m radius, 1 m/s) for ``seconds`` of sim time: wall and CPU real-time factors."""
    t0 = time.perf_counter()
    sim = FlightSim(dataclasses.replace(config, end_on_collision=False, max_duration_s=0.0))
    sim.set_command(1.0, 1.0)
    sim.step()                                    # the first step pays any JIT compilation
    startup = time.perf_counter() - t0
    sim_start, wall0, cpu0 = sim.time, time.perf_counter(), time.process_time()
    frames0 = sim.frame_seq
    while sim.time - sim_start < seconds and not sim.done:
        sim.step()
        if config.camera_hz and sim.frame_seq != frames0:
            sim.camera_frame()                    # count the copy a publisher makes
            frames0 = sim.frame_seq
    sim_s, wall, cpu = sim.time - sim_start, time.perf_counter() - wall0, time.process_time() - cpu0
    sim.close()
    return {"camera_hz": config.camera_hz, "size": config.camera_size[0], "startup_s": round(startup, 2),
            "sim_s": round(sim_s, 2), "rtf_wall": round(sim_s / wall, 2), "rtf_cpu": round(sim_s / cpu, 2),
            "jit": os.environ.get("NUMBA_DISABLE_JIT") != "1"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="real-time factor of the flight simulator")
    ap.add_argument("--seconds", type=float, default=20.0, help="simulated seconds per run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--camera", nargs="*", default=["0:128", "15:64", "15:128", "30:128", "30:224"],
                    help="camera settings hz:size (hz 0 = no camera)")
    opts = ap.parse_args(argv)
    for spec in opts.camera:
        hz, size = (int(v) for v in spec.split(":"))
        print(measure_rtf(FlightConfig(seed=opts.seed, kind="mixed", camera_hz=hz, camera_size=(size, size)),
                          opts.seconds), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
