"""Procedural obstacle courses, the drone's onboard camera, and ground-truth labels.

One module serves both the dataset generator (frames rendered without stepping
physics) and the PyFlyt flight simulator (the same courses built into an Aviary),
so training frames and in-flight frames come from the same worlds and the same
camera.

Conventions (PyFlyt's): world frame z-up; a drone orientation is pybullet Euler
``(roll, pitch, yaw)``, with positive pitch = nose *down* and positive yaw =
counter-clockwise (turning left). Obstacles are vertical prisms standing on the
ground plane ``z = 0``.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np

# --------------------------------------------------------------------------------
# Camera: exactly PyFlyt's QuadX onboard camera (PyFlyt/core/abstractions/camera.py)
# --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraSpec:
    """The onboard camera, parameterised like PyFlyt's ``QuadX(use_camera=True)``.

    PyFlyt's camera sits on link 0 of the cf2x URDF (``prop1_link``, whose
    centre of mass is 28 mm forward-right of the body centre) and adds
    ``angle_deg`` to the body's Euler pitch, i.e. it looks ``angle_deg`` *below*
    the body's nose when not gimballed.
    """

    fov_deg: float = 90.0                       # PyFlyt default camera_FOV_degrees
    angle_deg: float = 20.0                     # PyFlyt default camera_angle_degrees
    resolution: tuple[int, int] = (128, 128)    # (height, width), PyFlyt's order
    link_offset: tuple[float, float, float] = (0.028, -0.028, 0.0)   # cf2x camera link CoM, body frame
    position_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)    # PyFlyt camera_position_offset
    use_gimbal: bool = False
    near: float = 0.1
    far: float = 255.0

    @property
    def horizontal_fov_deg(self) -> float:
        h, w = self.resolution
        return math.degrees(2 * math.atan(math.tan(math.radians(self.fov_deg) / 2) * w / h))


DRONE_CAMERA = CameraSpec()


@dataclass(frozen=True)
class Lighting:
    """TinyRenderer light; the defaults are pybullet's own (what PyFlyt renders with).

    pybullet keeps light settings in the client once any call sets them, so every
    render passes all of them explicitly: a frame never depends on the one before.
    """

    direction: tuple[float, float, float] = (-50.0, 30.0, 100.0)
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ambient: float = 0.6
    diffuse: float = 0.35
    specular: float = 0.05
    shadow: bool = False

    def camera_kwargs(self) -> dict:
        return {
            "lightDirection": list(self.direction),
            "lightColor": list(self.color),
            "lightAmbientCoeff": self.ambient,
            "lightDiffuseCoeff": self.diffuse,
            "lightSpecularCoeff": self.specular,
            "shadow": int(self.shadow),
        }


DEFAULT_LIGHTING = Lighting()


def body_quaternion(client, yaw: float, pitch: float = 0.0, roll: float = 0.0):
    return client.getQuaternionFromEuler([roll, pitch, yaw])


def camera_eye(client, pos, yaw: float, pitch: float = 0.0, roll: float = 0.0, camera: CameraSpec = DRONE_CAMERA) -> np.ndarray:
    """World position of the camera for a drone body at ``pos`` with that attitude."""
    rot = np.array(client.getMatrixFromQuaternion(body_quaternion(client, yaw, pitch, roll))).reshape(3, 3)
    return np.asarray(pos, dtype=float) + rot @ (np.asarray(camera.link_offset) + np.asarray(camera.position_offset))


def camera_matrices(client, pos, yaw: float, pitch: float = 0.0, roll: float = 0.0, camera: CameraSpec = DRONE_CAMERA):
    """(view, projection) matrices, computed step for step as PyFlyt's ``Camera.view_mat``."""
    quat = body_quaternion(client, yaw, pitch, roll)
    eye = camera_eye(client, pos, yaw, pitch, roll, camera)
    rotation = np.array(client.getEulerFromQuaternion(quat))
    if camera.use_gimbal:
        rotation[0] = 0.0
        rotation[1] = -camera.angle_deg / 180 * math.pi
    else:
        rotation[1] += camera.angle_deg / 180 * math.pi
    rot = np.array(client.getMatrixFromQuaternion(client.getQuaternionFromEuler(rotation))).reshape(3, 3)
    view = client.computeViewMatrix(
        cameraEyePosition=eye,
        cameraTargetPosition=rot @ np.array([1000.0, 0.0, 0.0]) + eye,
        cameraUpVector=rot @ np.array([0.0, 0.0, 1.0]),
    )
    h, w = camera.resolution
    proj = client.computeProjectionMatrixFOV(fov=camera.fov_deg, aspect=float(w / h), nearVal=camera.near, farVal=camera.far)
    return view, proj


def render_camera(
    client,
    pos,
    yaw: float,
    pitch: float = 0.0,
    roll: float = 0.0,
    camera: CameraSpec = DRONE_CAMERA,
    lighting: Lighting = DEFAULT_LIGHTING,
) -> np.ndarray:
    """RGB uint8 (H, W, 3) frame the drone's camera sees at that pose.

    Uses the software TinyRenderer (the default in ``p.DIRECT``): the EGL plugin
    renders blank frames on headless machines.
    """
    view, proj = camera_matrices(client, pos, yaw, pitch, roll, camera)
    h, w = camera.resolution
    _, _, rgba, _, _ = client.getCameraImage(width=w, height=h, viewMatrix=view, projectionMatrix=proj,
                                             **lighting.camera_kwargs())
    return np.asarray(rgba, dtype=np.uint8).reshape(h, w, 4)[:, :, :3].copy()


# --------------------------------------------------------------------------------
# Courses
# --------------------------------------------------------------------------------

LEGACY_KINDS = ("forest", "boxes", "walls", "mixed")
#: every scene family (docs/model.md); the later ones live in :mod:`spinn_ros.sim.families`
COURSE_KINDS = LEGACY_KINDS + ("poles", "overhang", "clutter", "slabs", "composite", "gates")
#: families the shipped model trains on; the rest make the unseen-families test split
TRAIN_FAMILIES = ("forest", "boxes", "walls", "mixed", "poles", "overhang", "clutter", "slabs")
UNSEEN_FAMILIES = ("composite", "gates")


@dataclass(frozen=True)
class Obstacle:
    """A vertical prism: a cylinder ("pillar") or an oriented box ("box").

    It stands on the ground unless ``base`` lifts it (beams, overhangs, caps); parts of
    one composite obstacle share a ``group`` (and so one texture in training frames).
    """

    kind: str                              # "pillar" | "box"
    center: tuple[float, float]            # footprint centre (x, y)
    size: tuple[float, float, float]       # pillar: (radius, radius, height); box: full (x, y, z) extents
    yaw: float = 0.0
    color: tuple[float, float, float, float] = (0.5, 0.5, 0.5, 1.0)
    base: float = 0.0                      # height of the prism's bottom face above the ground
    group: int = -1                        # composite obstacles: parts share a group id (>= 0)

    @property
    def height(self) -> float:
        return self.size[2]

    @property
    def center_z(self) -> float:
        return self.base + self.size[2] / 2

    @property
    def footprint_radius(self) -> float:
        """Radius of a circle enclosing the footprint (used for spacing)."""
        return self.size[0] if self.kind == "pillar" else 0.5 * math.hypot(self.size[0], self.size[1])

    def distance(self, point) -> float:
        """Euclidean distance from a 3D point to the solid (0 inside)."""
        dx, dy = point[0] - self.center[0], point[1] - self.center[1]
        dz = max(self.base - point[2], point[2] - self.base - self.height, 0.0)
        if self.kind == "pillar":
            horiz = max(math.hypot(dx, dy) - self.size[0], 0.0)
        else:
            c, s = math.cos(-self.yaw), math.sin(-self.yaw)
            lx, ly = c * dx - s * dy, s * dx + c * dy
            horiz = math.hypot(max(abs(lx) - self.size[0] / 2, 0.0), max(abs(ly) - self.size[1] / 2, 0.0))
        return math.hypot(horiz, dz)


@dataclass(frozen=True)
class Course:
    """A seeded obstacle course: fly from ``start`` to ``goal`` (both (x, y, z))."""

    seed: int
    kind: str
    obstacles: tuple[Obstacle, ...]
    start: tuple[float, float, float]
    goal: tuple[float, float, float]
    bounds: tuple[float, float, float, float]    # xmin, xmax, ymin, ymax of the obstacle field
    walls: int = 0                               # how many walls-with-gaps (each is 2 boxes)

    def clearance(self, point) -> float:
        """Distance from a 3D point to the nearest obstacle (inf if none)."""
        return min((o.distance(point) for o in self.obstacles), default=math.inf)


@dataclass(frozen=True)
class CourseParams:
    """Ranges the generator draws from (metres)."""

    length: float = 20.0                 # start at x=0, goal at x=length
    width: float = 8.0                   # obstacle field spans y in [-width/2, width/2]
    margin: float = 2.5                  # obstacle-free distance around start and goal along x
    density: tuple[float, float] = (0.04, 0.22)      # free-standing obstacles per m^2
    pillar_radius: tuple[float, float] = (0.08, 0.4)
    tall_height: tuple[float, float] = (1.8, 4.0)
    low_height: tuple[float, float] = (0.3, 1.2)
    low_fraction: float = 0.15           # obstacles the drone can fly over at normal altitude
    box_side: tuple[float, float] = (0.3, 1.6)
    wall_thickness: tuple[float, float] = (0.15, 0.35)
    wall_gap: tuple[float, float] = (0.9, 1.8)
    wall_spacing: float = 3.5
    min_gap: float = 0.35                # between obstacle footprints, so every course is passable-ish
    flight_altitude: float = 1.0


def _random_color(rng: np.random.Generator) -> tuple[float, float, float, float]:
    h, s, v = rng.random(), rng.uniform(0.15, 1.0), rng.uniform(0.25, 1.0)
    return (*colorsys.hsv_to_rgb(h, s, v), 1.0)


def _random_height(rng, p: CourseParams) -> float:
    lo, hi = p.low_height if rng.random() < p.low_fraction else p.tall_height
    return float(rng.uniform(lo, hi))


def _random_free_obstacle(rng, p: CourseParams, kind: str, x: float, y: float) -> Obstacle:
    if kind == "pillar":
        r = float(rng.uniform(*p.pillar_radius))
        return Obstacle("pillar", (x, y), (r, r, _random_height(rng, p)), 0.0, _random_color(rng))
    sx, sy = (float(v) for v in rng.uniform(*p.box_side, size=2))
    return Obstacle("box", (x, y), (sx, sy, _random_height(rng, p)), float(rng.uniform(0, math.pi)), _random_color(rng))


def _walls(rng, p: CourseParams) -> list[Obstacle]:
    """Walls across the course (perpendicular to x), each with one gap; two boxes per wall."""
    xmin, xmax = p.margin + 1.0, p.length - p.margin - 1.0
    if xmax <= xmin:
        return []
    n = int(rng.integers(1, max(2, int((xmax - xmin) / p.wall_spacing) + 1)))
    xs = np.sort(rng.uniform(xmin, xmax, size=n))
    keep = [xs[0]] + [x for prev, x in zip(xs, xs[1:]) if x - prev >= p.wall_spacing]
    half_w = p.width / 2 + 1.0   # walls overhang the field so they cannot simply be flown around at the edge
    out = []
    for x in keep:
        gap = float(rng.uniform(*p.wall_gap))
        gap_y = float(rng.uniform(-p.width / 2 + gap, p.width / 2 - gap))
        t, h, color = float(rng.uniform(*p.wall_thickness)), float(rng.uniform(*p.tall_height)), _random_color(rng)
        for lo, hi in ((-half_w, gap_y - gap / 2), (gap_y + gap / 2, half_w)):
            out.append(Obstacle("box", (float(x), (lo + hi) / 2), (t, hi - lo, h), 0.0, color))
    return out


def _fits(candidate: Obstacle, placed: list[Obstacle], min_gap: float) -> bool:
    for o in placed:
        if o.kind == "box" and o.size[1] > 3 * o.size[0] and o.yaw == 0.0:
            # walls are long and thin: test against the wall's slab, not a huge bounding circle
            d = o.distance((candidate.center[0], candidate.center[1], 0.0))
            if d < candidate.footprint_radius + min_gap:
                return False
        elif math.dist(candidate.center, o.center) < candidate.footprint_radius + o.footprint_radius + min_gap:
            return False
    return True


def generate_course(seed: int, kind: str | None = None, params: CourseParams = CourseParams()) -> Course:
    """A deterministic course for ``seed``; ``kind`` None draws one of the legacy kinds.

    The legacy kinds (forest, boxes, walls, mixed) keep the obstacles they always had
    for a seed; the other families (:mod:`spinn_ros.sim.families`) put obstacles on the
    straight line to the goal.
    """
    rng = np.random.default_rng([int(seed), 0])
    kind = str(rng.choice(LEGACY_KINDS)) if kind is None else kind
    if kind not in COURSE_KINDS:
        raise ValueError(f"unknown course kind {kind!r}; choose one of {', '.join(COURSE_KINDS)}")
    if kind not in LEGACY_KINDS:
        from .families import generate_family

        return generate_family(seed, kind, rng, params)
    p = params
    placed: list[Obstacle] = _walls(rng, p) if kind in ("walls", "mixed") else []
    n_walls = len(placed) // 2
    xmin, xmax, ymin, ymax = p.margin, p.length - p.margin, -p.width / 2, p.width / 2
    density = float(rng.uniform(*p.density)) * (0.5 if kind == "walls" else 1.0)
    target = int(round(density * (xmax - xmin) * (ymax - ymin)))
    shapes = {"forest": ("pillar",), "boxes": ("box",), "walls": ("pillar", "box"), "mixed": ("pillar", "box")}[kind]
    for _ in range(target * 20):
        if len(placed) - 2 * n_walls >= target:
            break
        x, y = float(rng.uniform(xmin, xmax)), float(rng.uniform(ymin, ymax))
        cand = _random_free_obstacle(rng, p, str(rng.choice(shapes)), x, y)
        if _fits(cand, placed, p.min_gap):
            placed.append(cand)
    return Course(
        seed=int(seed),
        kind=kind,
        obstacles=tuple(placed),
        start=(0.0, 0.0, p.flight_altitude),
        goal=(p.length, 0.0, p.flight_altitude),
        bounds=(xmin, xmax, ymin, ymax),
        walls=n_walls,
    )


def load_ground(client) -> int:
    """The ground PyFlyt's Aviary loads (pybullet_data's checkered ``plane.urdf``)."""
    import pybullet_data

    client.setAdditionalSearchPath(pybullet_data.getDataPath())
    return client.loadURDF("plane.urdf", useFixedBase=True, globalScaling=1.0)


def build_course(client, course: Course) -> list[int]:
    """Create the course's static obstacles in a pybullet client (or PyFlyt Aviary).

    Returns the body ids in ``course.obstacles`` order. After building into an
    Aviary call ``aviary.register_all_new_bodies()`` so contacts are tracked.
    """
    import pybullet as p

    ids = []
    for o in course.obstacles:
        if o.kind == "pillar":
            col = client.createCollisionShape(p.GEOM_CYLINDER, radius=o.size[0], height=o.height)
            vis = client.createVisualShape(p.GEOM_CYLINDER, radius=o.size[0], length=o.height, rgbaColor=o.color)
        else:
            half = [s / 2 for s in o.size]
            col = client.createCollisionShape(p.GEOM_BOX, halfExtents=half)
            vis = client.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=o.color)
        ids.append(
            client.createMultiBody(
                baseMass=0.0,
                baseCollisionShapeIndex=col,
                baseVisualShapeIndex=vis,
                basePosition=[o.center[0], o.center[1], o.center_z],
                baseOrientation=client.getQuaternionFromEuler([0.0, 0.0, o.yaw]),
            )
        )
    return ids


def new_world(course: Course, client=None):
    """A headless ``p.DIRECT`` client holding ground + course: ``(client, obstacle_ids)``.

    Pass an existing client to reuse it (its simulation is reset first).
    """
    if client is None:
        import pybullet as p
        from pybullet_utils import bullet_client

        client = bullet_client.BulletClient(p.DIRECT)
    client.resetSimulation()
    load_ground(client)
    return client, build_course(client, course)


# --------------------------------------------------------------------------------
# Ground-truth labels (DroNet-style) from ray casts in the horizontal camera plane
# --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelSpec:
    """Label definitions; see docs/model.md.

    Rays start at the camera eye and lie in the *horizontal* plane through it, fanned
    around the drone's heading (yaw); roll and pitch do not move the fan, because the
    drone's path at its altitude is what can hit something.

    * collision = some ray within +-``collision_half_angle_deg`` of the heading hits an
      obstacle closer than ``collision_distance``.
    * steering: each direction in +-``fan_half_angle_deg`` (the camera's horizontal
      half-FOV) gets a clearance = the shortest hit within +-``gap_half_window_deg``
      of it (so a gap must be wide, not a single lucky ray), capped at ``max_range``,
      minus ``straight_bias`` metres per radian of turn (prefer going straight when
      it is about as open). The best direction, as a fraction of the half-FOV with
      negative = left, is the target in [-1, 1].
    """

    collision_distance: float = 1.5
    collision_half_angle_deg: float = 10.0
    fan_half_angle_deg: float = 45.0
    ray_step_deg: float = 1.0
    max_range: float = 6.0
    gap_half_window_deg: float = 6.0
    straight_bias: float = 0.5


DEFAULT_LABELS = LabelSpec()


@dataclass(frozen=True)
class Label:
    collision: bool
    steering: float        # [-1, 1], negative = turn left
    nearest_ahead: float   # metres to the nearest hit inside the collision window (max_range if none)


def ray_angles(spec: LabelSpec = DEFAULT_LABELS) -> np.ndarray:
    """Ray bearings (radians, +ve = left) covering the fan plus the gap window on each side."""
    half = spec.fan_half_angle_deg + spec.gap_half_window_deg
    n = int(round(half / spec.ray_step_deg))
    return np.radians(np.arange(-n, n + 1) * spec.ray_step_deg)


def ray_fan(client, origin, yaw: float, spec: LabelSpec = DEFAULT_LABELS) -> np.ndarray:
    """Hit distance along each ray of :func:`ray_angles` (``max_range`` where nothing is hit)."""
    origin = np.asarray(origin, dtype=float)
    bearings = yaw + ray_angles(spec)
    ends = origin + spec.max_range * np.stack([np.cos(bearings), np.sin(bearings), np.zeros_like(bearings)], axis=1)
    hits = client.rayTestBatch([origin.tolist()] * len(ends), ends.tolist())
    return np.array([h[2] * spec.max_range if h[0] >= 0 else spec.max_range for h in hits])


def labels_from_fan(distances: np.ndarray, spec: LabelSpec = DEFAULT_LABELS) -> Label:
    """Collision and steering from the distances returned by :func:`ray_fan`."""
    angles = ray_angles(spec)
    d = np.minimum(np.asarray(distances, dtype=float), spec.max_range)
    ahead = np.abs(angles) <= math.radians(spec.collision_half_angle_deg) + 1e-9
    nearest = float(d[ahead].min())
    w = int(round(spec.gap_half_window_deg / spec.ray_step_deg))
    # clearance of each candidate direction = min over its window (sliding minimum)
    windows = np.lib.stride_tricks.sliding_window_view(d, 2 * w + 1)
    clearance = windows.min(axis=1)
    cand = angles[w: len(angles) - w]
    score = clearance - spec.straight_bias * np.abs(cand)
    # ties (e.g. an open field) resolve to the straightest direction
    best = np.flatnonzero(score >= score.max() - 1e-9)
    theta = cand[best[np.argmin(np.abs(cand[best]))]]
    steering = float(-theta / math.radians(spec.fan_half_angle_deg))
    return Label(collision=nearest < spec.collision_distance, steering=steering, nearest_ahead=nearest)


def ground_truth(client, pos, yaw: float, pitch: float = 0.0, roll: float = 0.0,
                 camera: CameraSpec = DRONE_CAMERA, spec: LabelSpec = DEFAULT_LABELS) -> Label:
    """Labels for the drone at that pose (rays from its camera eye)."""
    eye = camera_eye(client, pos, yaw, pitch, roll, camera)
    return labels_from_fan(ray_fan(client, eye, yaw, spec), spec)
