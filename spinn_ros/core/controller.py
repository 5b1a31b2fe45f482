"""DroNet-style mapping from a perception result to a velocity command.

Forward speed falls with collision probability and yaw rate follows steering, both
low-pass filtered (Loquercio et al., DroNet, RA-L 2018); above a critical collision
probability the drone stops at once; without a fresh result it hovers. A refined
(cloud) result for the frame that produced the last command replaces that frame's
provisional contribution instead of being filtered in on top of it. A stop ordered by a
final answer holds until another final answer releases it (the next frame's provisional
device answer, less informed, cannot), and a late final answer for an older frame still
stops the drone if it is critical.

DroNet only avoids: after turning away from an obstacle it flies on in the new heading.
With ``goal_gain`` > 0 and a heading error toward a goal (from the drone's odometry), the
yaw target also turns toward the goal, weighted by how clear the way ahead is: fully at
p = 0, fading to nothing at p = 0.5, so near obstacles the network alone steers and the
goal cannot pull the drone back into what it is avoiding. Nor may it turn the drone's side
into an obstacle it has just passed: the collision probability covers only +-10 deg ahead,
and the network is least sure at that edge; a pillar 25-35 deg off the nose at under a
metre showed p = 0.00 while the goal turned the drone into it (two of eight full forest
courses, 2026-12-01). So the pull fades with the highest p of the frames taken over the
last ``goal_clearance_m`` flown (commanded speed x time), not with the latest one: after
stopping at a pillar and turning away, the drone flies that far before the goal may turn
it back. ``goal_cone`` bounds how far the drone may turn away from the goal: beyond it no
yaw away from the goal is commanded, so it cannot wander off along an obstacle it cannot
pass (at a blocking wall it stops there).
``search_yaw_rate``: stopped in front of something with no side preferred, the drone
turns at least this fast (within the cone) to look for a way around it.

Stale answers: every answer comes with its age (camera stamp to now, on the clock the
camera stamps with). The filters fold it in as usual, but the forward speed commanded is
scaled by :func:`age_factor`: full up to ``slow_age_s``, falling linearly to nothing at
``max_age_s``, and from there the drone hovers (no forward motion, no turn). A drone acting
on what it saw half a second ago at full speed has flown half a metre blind; a busy flight
computer (or a stalled camera) must cost speed, not a collision. An old answer is worse
while the drone turns: it describes a view the drone no longer faces (stopped at a pillar
and searching, a "clear" frame from before the turn led it into the pillar). So the speed
is also scaled by how far the drone has turned since the frame: the yaw rates commanded
since its stamp (the caller reports each command it sends: :meth:`commanded`), integrated
up to now (stamp + age), full up to ``turn_slow_rad``, nothing from ``turn_max_rad`` on.
A replay that reports the recorded commands gets the same speeds.
"""
from __future__ import annotations

import collections
import math
from dataclasses import dataclass

SEARCH_LEAN = 0.1       # |steering| from which the network's side decides a stopped drone's search turn
YAW_LOG = 64            # commands remembered for the turn since a frame (~4 s of frames at 15 Hz)


@dataclass(frozen=True)
class ControllerConfig:
    max_forward_speed: float = 1.0      # m/s at collision probability 0
    max_yaw_rate: float = 1.0           # rad/s at |steering| = 1
    speed_alpha: float = 0.5            # low-pass weight of a new speed sample (DroNet: 0.7)
    yaw_alpha: float = 0.5              # low-pass weight of a new yaw sample (DroNet: 0.5)
    critical_collision: float = 0.9     # at or above: hard stop
    timeout_s: float = 0.5              # hover if no result for this long
    goal_gain: float = 0.0              # rad/s of yaw per rad of heading error to the goal at p = 0; 0: off
    goal_cone: float = math.pi          # rad: never yaw further away from the goal beyond this; >= pi: no limit
    search_yaw_rate: float = 0.0        # rad/s: stopped with (almost) no steering, turn at least this fast; 0: off
    slow_age_s: float = 0.25            # an answer older than this (camera stamp to now) slows the drone
    max_age_s: float = 0.6              # ... and one this old or older makes it hover
    turn_slow_rad: float = 0.05         # turned more than this since the answer's frame: slower ...
    turn_max_rad: float = 0.3           # ... down to a hover at this much turn
    goal_clearance_m: float = 1.5       # the goal pulls by the highest p of the frames of the last this many metres

    def __post_init__(self):
        checks = {
            "max_forward_speed": self.max_forward_speed >= 0,
            "max_yaw_rate": self.max_yaw_rate >= 0,
            "speed_alpha": 0 < self.speed_alpha <= 1,
            "yaw_alpha": 0 < self.yaw_alpha <= 1,
            "critical_collision": 0 < self.critical_collision <= 1,
            "timeout_s": self.timeout_s > 0,
            "goal_gain": self.goal_gain >= 0,
            "goal_cone": self.goal_cone > 0,
            "search_yaw_rate": self.search_yaw_rate >= 0,
            "slow_age_s": self.slow_age_s >= 0,
            "max_age_s": self.max_age_s > self.slow_age_s,
            "turn_slow_rad": self.turn_slow_rad >= 0,
            "turn_max_rad": self.turn_max_rad > self.turn_slow_rad,
            "goal_clearance_m": self.goal_clearance_m >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid controller settings: {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")


@dataclass(frozen=True)
class Command:
    forward_speed: float   # m/s, body x
    yaw_rate: float        # rad/s, ROS convention: positive turns left (counter-clockwise)
    stamp_ns: int          # source image stamp this command was computed from
    reason: str            # "track", "stop", "hover", "stale" (an older frame's answer: nothing to publish)


def age_factor(age_s: float, config: ControllerConfig) -> float:
    """How much of the filtered forward speed an answer this old may command: 1 up to
    ``slow_age_s``, linearly down to 0 at ``max_age_s`` (where the drone hovers)."""
    if age_s <= config.slow_age_s:
        return 1.0
    return max(0.0, (config.max_age_s - age_s) / (config.max_age_s - config.slow_age_s))


def turn_factor(turned_rad: float, config: ControllerConfig) -> float:
    """How much of the speed an answer may command after the drone turned this far since its frame."""
    turned = abs(turned_rad)
    if turned <= config.turn_slow_rad:
        return 1.0
    return max(0.0, (config.turn_max_rad - turned) / (config.turn_max_rad - config.turn_slow_rad))


class DroNetController:
    def __init__(self, config: ControllerConfig | None = None):
        self.config = config or ControllerConfig()
        self._speed = 0.0
        self._yaw = 0.0
        self._last_stamp_ns: int | None = None
        self._stop_held = False           # a final result said stop: provisional ones cannot release it
        self._search = 0.0                # while stopped: the way it turns to look for a way (+1 left, -1 right)
        self._before_last = (0.0, 0.0, False, 0.0)    # state before the last frame was applied
        self._yaw_log: collections.deque = collections.deque(maxlen=YAW_LOG)   # (command time ns, yaw rate)
        self._flown_m = 0.0               # forward distance commanded so far (speed held until the next frame)
        self._commanded_speed = 0.0       # the forward speed of the last command sent
        # the frames of the last goal_clearance_m flown, one entry per spot flown from:
        # [flown m, stamp ns of its latest frame, that frame's p, highest p of its earlier frames]
        self._recent_p: collections.deque = collections.deque()

    def update(self, collision_prob: float, steering: float, stamp_ns: int,
               heading_error: float | None = None, provisional: bool = False, age_s: float = 0.0) -> Command:
        """Fold one result in; a second result for the same stamp replaces the first.

        ``heading_error``: bearing of the goal minus the drone's heading, rad (positive: goal
        to the left), or None without a goal. ``provisional``: a device answer a refined one
        may replace; it cannot release a stop a final answer ordered (the final answer of a
        later frame does). A result for an older frame never rewinds the controller, but one
        at or above the critical probability still stops the drone. ``age_s``: how old the
        result's camera frame is now; it scales the commanded forward speed (module doc)."""
        now_ns = stamp_ns + round(age_s * 1e9)
        cmd = self._fold(collision_prob, steering, stamp_ns, heading_error, provisional)
        if cmd.reason == "track":
            factor = age_factor(age_s, self.config) * turn_factor(self.turned_since(stamp_ns, now_ns), self.config)
            if factor == 0.0:   # too old to steer by: hold still; the filters keep the answer for the next one
                cmd = Command(0.0, 0.0, stamp_ns, "hover")
            elif factor < 1.0:
                cmd = Command(cmd.forward_speed * factor, cmd.yaw_rate, stamp_ns, "track")
        if cmd.reason != "stale":
            self._commanded_speed = cmd.forward_speed
        return cmd

    def commanded(self, now_ns: int, yaw_rate: float) -> None:
        """The caller sent a command with this yaw rate at ``now_ns`` (the clock of the stamps)."""
        self._yaw_log.append((now_ns, yaw_rate))

    def turned_since(self, stamp_ns: int, now_ns: int) -> float:
        """Radians the commanded yaw rates turned the drone from ``stamp_ns`` to ``now_ns`` (each command
        holds until the next, as the autopilot holds it)."""
        turned = 0.0
        log = list(self._yaw_log)
        for (t, rate), (t_next, _) in zip(log, [*log[1:], (now_ns, 0.0)]):
            lo, hi = max(t, stamp_ns), min(t_next, now_ns)
            if hi > lo:
                turned += rate * (hi - lo) / 1e9
        return turned

    def _fold(self, collision_prob: float, steering: float, stamp_ns: int, heading_error: float | None,
              provisional: bool) -> Command:
        c = self.config
        if stamp_ns == self._last_stamp_ns:
            self._speed, self._yaw, self._stop_held, self._search = self._before_last
        elif self._last_stamp_ns is not None and stamp_ns < self._last_stamp_ns:
            if collision_prob < c.critical_collision:     # e.g. a late refinement
                return Command(self._speed, self._yaw, self._last_stamp_ns, "stale")
            self._speed = 0.0
            self._stop_held = self._stop_held or not provisional
            return Command(0.0, self._yaw, stamp_ns, "stop")
        self._before_last = (self._speed, self._yaw, self._stop_held, self._search)
        self._last_stamp_ns = stamp_ns
        # an answer that is not a number says nothing: stop (p = 1) and steer straight, rather than
        # let NaN through the clamps into the filters, where it would stay until the next hover
        p = 1.0 if math.isnan(collision_prob) else min(max(collision_prob, 0.0), 1.0)
        s = 0.0 if math.isnan(steering) else min(max(steering, -1.0), 1.0)
        if heading_error is not None and math.isnan(heading_error):
            heading_error = None
        p_recent = self._remember_p(stamp_ns, p)
        target_yaw = -s * c.max_yaw_rate            # steering > 0 means "turn right"
        stopping = p >= c.critical_collision or (provisional and self._stop_held)
        if not stopping:
            self._search = 0.0
        elif c.search_yaw_rate > 0:
            # stopped: turn at least search_yaw_rate to look for a way (e.g. a pillar dead ahead), the way
            # the network leans when it clearly does, else the way chosen before during this stop (first:
            # toward the goal, else left), so that a wavering steering cannot hold the drone in place
            if abs(s) >= SEARCH_LEAN:
                self._search = -math.copysign(1.0, s)
            elif not self._search:
                self._search = math.copysign(1.0, heading_error) if heading_error else 1.0
            target_yaw = self._search * max(abs(target_yaw), min(c.search_yaw_rate, c.max_yaw_rate))
        if heading_error is not None:
            e = math.remainder(heading_error, math.tau)   # > 0: the goal is to the left
            if c.goal_gain > 0:
                clear = max(0.0, 1.0 - 2.0 * p_recent)    # 1 at p = 0, 0 from p = 0.5 on
                target_yaw = min(max(target_yaw + c.goal_gain * clear * e, -c.max_yaw_rate), c.max_yaw_rate)
            if abs(e) >= c.goal_cone and target_yaw * e < 0:
                target_yaw = 0.0                          # would turn further away from the goal
        self._yaw = (1 - c.yaw_alpha) * self._yaw + c.yaw_alpha * target_yaw
        if stopping:
            self._speed = 0.0
            self._stop_held = self._stop_held or not provisional
            return Command(0.0, self._yaw, stamp_ns, "stop")
        self._stop_held = False
        self._speed = (1 - c.speed_alpha) * self._speed + c.speed_alpha * (1 - p) * c.max_forward_speed
        return Command(self._speed, self._yaw, stamp_ns, "track")

    def _remember_p(self, stamp_ns: int, p: float) -> float:
        """Log this frame's p (replacing its provisional one) and return the highest p of the frames
        taken over the last ``goal_clearance_m`` flown. Frames taken without moving share one entry
        (the log is trimmed by distance only), so a hovering drone's log does not grow."""
        log = self._recent_p
        if log and log[-1][1] == stamp_ns:
            log[-1][2] = p                                  # the refinement replaces the provisional p
        else:
            if log:
                self._flown_m += self._commanded_speed * (stamp_ns - log[-1][1]) / 1e9
            if log and log[-1][0] == self._flown_m:         # not moved since the last frame
                last = log[-1]
                last[1], last[2], last[3] = stamp_ns, p, max(last[2], last[3])
            else:
                log.append([self._flown_m, stamp_ns, p, 0.0])
        while self._flown_m - log[0][0] > self.config.goal_clearance_m:
            log.popleft()
        return max(max(latest, earlier) for _, _, latest, earlier in log)

    def hover(self) -> Command:
        """No fresh result: stop and forget the filter state."""
        self._speed = self._yaw = self._commanded_speed = 0.0
        self._stop_held = False
        self._search = 0.0
        self._yaw_log.clear()         # hovering: no turn until the next command
        return Command(0.0, 0.0, self._last_stamp_ns or 0, "hover")
