"""DroNet-style mapping from a perception result to a velocity command.

Forward speed falls with collision probability and yaw rate follows steering, both
low-pass filtered (Loquercio et al., DroNet, RA-L 2018); above a critical collision
probability the drone stops at once; without a fresh result it hovers. A refined
(cloud) result for the frame that produced the last command replaces that frame's
provisional contribution instead of being filtered in on top of it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ControllerConfig:
    max_forward_speed: float = 1.0      # m/s at collision probability 0
    max_yaw_rate: float = 1.0           # rad/s at |steering| = 1
    speed_alpha: float = 0.5            # low-pass weight of a new speed sample (DroNet: 0.7)
    yaw_alpha: float = 0.5              # low-pass weight of a new yaw sample (DroNet: 0.5)
    critical_collision: float = 0.9     # at or above: hard stop
    timeout_s: float = 0.5              # hover if no result for this long

    def __post_init__(self):
        checks = {
            "max_forward_speed": self.max_forward_speed >= 0,
            "max_yaw_rate": self.max_yaw_rate >= 0,
            "speed_alpha": 0 < self.speed_alpha <= 1,
            "yaw_alpha": 0 < self.yaw_alpha <= 1,
            "critical_collision": 0 < self.critical_collision <= 1,
            "timeout_s": self.timeout_s > 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid controller settings: {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")


@dataclass(frozen=True)
class Command:
    forward_speed: float   # m/s, body x
    yaw_rate: float        # rad/s, ROS convention: positive turns left (counter-clockwise)
    stamp_ns: int          # source image stamp this command was computed from
    reason: str            # "track", "stop", "hover"


class DroNetController:
    def __init__(self, config: ControllerConfig | None = None):
        self.config = config or ControllerConfig()
        self._speed = 0.0
        self._yaw = 0.0
        self._last_stamp_ns: int | None = None
        self._before_last = (0.0, 0.0)    # filter state before the last frame was applied

    def update(self, collision_prob: float, steering: float, stamp_ns: int) -> Command:
        """Fold one result in; a second result for the same stamp replaces the first."""
        c = self.config
        if stamp_ns == self._last_stamp_ns:
            self._speed, self._yaw = self._before_last
        elif self._last_stamp_ns is not None and stamp_ns < self._last_stamp_ns:
            # an older frame (e.g. a late refinement): never rewind the controller
            return Command(self._speed, self._yaw, self._last_stamp_ns, "stale")
        self._before_last = (self._speed, self._yaw)
        self._last_stamp_ns = stamp_ns
        p = min(max(collision_prob, 0.0), 1.0)
        s = min(max(steering, -1.0), 1.0)
        target_yaw = -s * c.max_yaw_rate            # steering > 0 means "turn right"
        self._yaw = (1 - c.yaw_alpha) * self._yaw + c.yaw_alpha * target_yaw
        if p >= c.critical_collision:
            self._speed = 0.0
            return Command(0.0, self._yaw, stamp_ns, "stop")
        self._speed = (1 - c.speed_alpha) * self._speed + c.speed_alpha * (1 - p) * c.max_forward_speed
        return Command(self._speed, self._yaw, stamp_ns, "track")

    def hover(self) -> Command:
        """No fresh result: stop and forget the filter state."""
        self._speed = self._yaw = 0.0
        return Command(0.0, 0.0, self._last_stamp_ns or 0, "hover")
