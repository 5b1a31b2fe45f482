"""Test fixture: the simulator node on a course no controller can pass.

Runs ``spinn_ros.nodes.sim_node`` unchanged, with one extra course kind, ``blocked``: a
single wall across the whole flight area (wider than the flight bounds, taller than any
flight altitude), WALL_X metres ahead of the start, and nothing else. The sim node and
world have no way to describe such a course yet, so this script adds the kind before the
node is imported. Used by test_flight.py through ``spinn fly --sim-exec``.

    python test/system/blocked_wall_sim.py --ros-args -p course.kind:=blocked
"""
from __future__ import annotations

import sys

from spinn_ros.sim import world

WALL_X = 5.0            # m ahead of the start
WALL_THICKNESS = 0.3
WALL_HEIGHT = 3.0

_generate = world.generate_course


def generate_course(seed: int, kind: str | None = None, params: world.CourseParams | None = None):
    params = world.CourseParams() if params is None else params
    if kind != "blocked":
        return _generate(seed, kind, params)
    p = params
    span = p.width + 2 * 4.0        # beyond the flight bounds (field width + bounds margin) on both sides
    wall = world.Obstacle("box", (WALL_X, 0.0), (WALL_THICKNESS, span, WALL_HEIGHT), 0.0, (0.55, 0.3, 0.3, 1.0))
    return world.Course(seed=int(seed), kind="blocked", obstacles=(wall,), start=(0.0, 0.0, p.flight_altitude),
                        goal=(p.length, 0.0, p.flight_altitude),
                        bounds=(p.margin, p.length - p.margin, -p.width / 2, p.width / 2), walls=1)


world.COURSE_KINDS = (*world.COURSE_KINDS, "blocked")
world.generate_course = generate_course

from spinn_ros.nodes import sim_node  # noqa: E402 - after the course kind exists

if __name__ == "__main__":
    sys.exit(sim_node.main())
