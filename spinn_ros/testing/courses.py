"""Seeded courses with a known property (a wall straight ahead, a clear run), found by looking,
so tests stay valid when the course generator (spinn_ros/sim/world.py) changes."""
from __future__ import annotations

import math

import numpy as np

from ..sim import world

DRONE_RADIUS = 0.15        # cf2x arms + propellers, with a little slack


def first_obstacle_ahead(course: world.Course, length: float = 20.0) -> tuple[int | None, float]:
    """(index, x) of the first obstacle the straight line y=0 at flight altitude runs into."""
    z = course.start[2]
    for x in np.arange(0.0, length, 0.05):
        for i, o in enumerate(course.obstacles):
            if o.distance((x, 0.0, z)) < DRONE_RADIUS:
                return i, float(x)
    return None, math.inf


def seed_where(kind: str, predicate) -> int:
    """The first seed whose course satisfies ``predicate`` (keeps tests valid if world.py changes)."""
    return next(s for s in range(200) if predicate(world.generate_course(s, kind)))


def wall_ahead(course) -> bool:
    index, _ = first_obstacle_ahead(course)
    return index is not None and index < 2 * course.walls


def clear_ahead(course, distance: float = 6.0) -> bool:
    return first_obstacle_ahead(course)[1] > distance


WALL_SEED = seed_where("walls", wall_ahead)
CLEAR_SEED = seed_where("forest", clear_ahead)
