"""Labelled onboard-camera frames rendered from procedural worlds (``spinn gen-data``).

Each world seed gives one course (:func:`spinn_ros.sim.world.generate_course`) and a
fixed number of camera poses in it; everything about a world -- obstacles, poses,
lighting -- derives from its seed, so a split is reproducible whatever the number of
worker processes. Splits use disjoint seed ranges (:data:`SPLIT_SEED_BASE`).

A split is one compressed ``<split>.npz`` (uint8 frames + labels + the manifest as
JSON) with the same manifest beside it as ``<split>.json`` for humans.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing as mp
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = "spinn-dataset"
VERSION = 2

#: first world seed of each split; ranges never overlap while a split has < 1e6 worlds
SPLIT_SEED_BASE = {"train": 0, "val": 1_000_000, "calib": 2_000_000, "test": 3_000_000,
                   "test-families": 4_000_000, "test-appearance": 5_000_000}
#: the generalisation protocol (docs/model.md): which scene families and which appearance
#: pool each split draws from; the two unseen splits hold out one of them each
SPLIT_SCENES = {
    "train": ("train", "train"), "val": ("train", "train"), "calib": ("train", "train"), "test": ("train", "train"),
    "test-families": ("unseen", "train"), "test-appearance": ("train", "heldout"),
}
TEST_SPLITS = ("test", "test-families", "test-appearance")
DEFAULT_WORLDS = {"train": 640, "val": 60, "calib": 150, "test": 100, "test-families": 100, "test-appearance": 100}
DEFAULT_FRAMES_PER_WORLD = 40
ARRAYS = ("images", "collision", "steering", "nearest", "pose", "world", "family", "textured")


def split_families(split: str) -> tuple[str, ...]:
    from . import world as W

    return W.TRAIN_FAMILIES if SPLIT_SCENES[split][0] == "train" else W.UNSEEN_FAMILIES


@dataclass(frozen=True)
class PoseParams:
    """How camera poses are drawn inside a world (metres, degrees)."""

    near_obstacle: float = 0.75          # share of poses placed near a chosen obstacle's surface
    surface_distance: tuple[float, float] = (0.25, 3.0)
    facing_offset_deg: float = 30.0      # heading jitter around "facing the obstacle"
    height: tuple[float, float] = (0.4, 2.4)
    tilt_sigma_deg: float = 5.0          # pitch and roll ~ N(0, sigma), clipped
    tilt_max_deg: float = 15.0
    min_clearance: float = 0.3           # camera eye to any obstacle
    default_light: float = 0.4           # share of frames with pybullet's default light (what PyFlyt renders)
    shadow: float = 0.5                  # share of the re-lit frames with shadows
    facing_marking: float = 0.1          # share of poses looking at a ground marking (not an obstacle)


# ---------------------------------------------------------------------------------
# Sampling and rendering one world
# ---------------------------------------------------------------------------------


def _surface_point(rng, obstacle):
    """A random point on an obstacle's side surface and its outward normal (2D)."""
    if obstacle.kind == "pillar":
        phi = rng.uniform(0, 2 * math.pi)
        n = np.array([math.cos(phi), math.sin(phi)])
        return np.asarray(obstacle.center) + obstacle.size[0] * n, n
    sx, sy = obstacle.size[0], obstacle.size[1]
    # pick a side with probability proportional to its length, then a point along it
    side = rng.choice(4, p=np.array([sy, sy, sx, sx]) / (2 * (sx + sy)))
    t = rng.uniform(-0.5, 0.5)
    local, n = [((sx / 2, t * sy), (1, 0)), ((-sx / 2, t * sy), (-1, 0)),
                ((t * sx, sy / 2), (0, 1)), ((t * sx, -sy / 2), (0, -1))][side]
    c, s = math.cos(obstacle.yaw), math.sin(obstacle.yaw)
    rot = np.array([[c, -s], [s, c]])
    return np.asarray(obstacle.center) + rot @ np.asarray(local), rot @ np.asarray(n, dtype=float)


def sample_pose(rng, course, params: PoseParams = PoseParams(), markings=()):
    """(pos, yaw, pitch, roll) biased toward obstacles so collision frames are common,
    and sometimes toward ground markings so the model learns paint is not an obstacle."""
    xmin, xmax, ymin, ymax = course.bounds
    tilt = lambda: math.radians(float(np.clip(rng.normal(0, params.tilt_sigma_deg), -params.tilt_max_deg, params.tilt_max_deg)))
    for _ in range(1000):
        z = float(rng.uniform(*params.height))
        if markings and rng.random() < params.facing_marking:
            m = markings[rng.integers(len(markings))]
            bearing = rng.uniform(-math.pi, math.pi)
            xy = np.asarray(m.center) + rng.uniform(1.0, 4.0) * np.array([math.cos(bearing), math.sin(bearing)])
            yaw = bearing + math.pi + math.radians(rng.uniform(-15, 15))
        elif course.obstacles and rng.random() < params.near_obstacle:
            obstacle = course.obstacles[rng.integers(len(course.obstacles))]
            point, normal = _surface_point(rng, obstacle)
            xy = point + normal * rng.uniform(*params.surface_distance)
            yaw = math.atan2(-normal[1], -normal[0]) + math.radians(rng.uniform(-1, 1) * params.facing_offset_deg)
        else:
            xy = np.array([rng.uniform(xmin - 2, xmax + 2), rng.uniform(ymin - 1, ymax + 1)])
            yaw = rng.uniform(-math.pi, math.pi)
        pos = (float(xy[0]), float(xy[1]), z)
        if course.clearance(pos) >= params.min_clearance:
            return pos, float(yaw), tilt(), tilt()
    raise RuntimeError(f"no free camera pose found in course seed {course.seed}")


def sample_lighting(rng, params: PoseParams = PoseParams()):
    from . import world as W

    if rng.random() < params.default_light:
        return W.DEFAULT_LIGHTING
    az, el = rng.uniform(0, 2 * math.pi), math.radians(rng.uniform(20, 85))
    return W.Lighting(
        direction=(math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)),
        color=tuple(float(v) for v in rng.uniform(0.85, 1.0, size=3)),
        ambient=float(rng.uniform(0.35, 0.8)),
        diffuse=float(rng.uniform(0.2, 0.7)),
        specular=float(rng.uniform(0.0, 0.15)),
        shadow=bool(rng.random() < params.shadow),
    )


_CLIENT = None   # one pybullet client per worker process


GREY = (0.5, 0.5, 0.5, 1.0)   # textured worlds render grey: the render is the shading


def _paint_grey(client, ids) -> None:
    client.changeVisualShape(0, -1, textureUniqueId=-1, rgbaColor=list(GREY))     # the ground plane (body 0)
    for body in ids:
        client.changeVisualShape(body, -1, rgbaColor=list(GREY))


def render_frame(client, ids, app, pos, yaw, pitch, roll, camera, lighting, rng) -> np.ndarray:
    """One uint8 frame: as the flight simulator renders it (plain worlds) or re-textured."""
    from . import appearance as A
    from . import world as W

    if app.plain:
        img = W.render_camera(client, pos, yaw, pitch, roll, camera, lighting)
        return A.camera_effects(img / 255.0, rng, strength=0.6)
    view, proj = W.camera_matrices(client, pos, yaw, pitch, roll, camera)
    h, w = camera.resolution
    _, _, rgba, depth, seg = client.getCameraImage(width=w, height=h, viewMatrix=view, projectionMatrix=proj,
                                                   **lighting.camera_kwargs())
    shading = np.asarray(rgba, dtype=np.float64).reshape(h, w, 4)[:, :, :3] / (255 * GREY[0])
    eye = W.camera_eye(client, pos, yaw, pitch, roll, camera)
    img = A.compose(app, shading, np.asarray(depth).reshape(h, w), np.asarray(seg).reshape(h, w), view, proj, eye,
                    ground_id=0, obstacle_ids={b: i for i, b in enumerate(ids)})
    return A.camera_effects(img, rng)


def render_world(seed: int, frames: int, size: int, families=None, pool: str = "train",
                 poses: PoseParams = PoseParams()) -> dict[str, np.ndarray]:
    """All frames and labels of one world seed (deterministic): a course of one of
    ``families`` (default: the training families) with a look drawn from ``pool``."""
    from . import appearance as A
    from . import world as W

    global _CLIENT
    rng = np.random.default_rng([int(seed), 1])
    families = W.TRAIN_FAMILIES if families is None else families
    course = W.generate_course(seed, str(rng.choice(families)))
    _CLIENT, ids = W.new_world(course, _CLIENT)
    app = A.random_appearance(rng, course, A.POOLS[pool])
    if not app.plain:
        _paint_grey(_CLIENT, ids)
    camera = dataclasses.replace(W.DRONE_CAMERA, resolution=(size, size))
    out = {k: [] for k in ARRAYS}
    for _ in range(frames):
        pos, yaw, pitch, roll = sample_pose(rng, course, poses, app.markings)
        lighting = sample_lighting(rng, poses)
        label = W.ground_truth(_CLIENT, pos, yaw, pitch, roll, camera)
        out["images"].append(render_frame(_CLIENT, ids, app, pos, yaw, pitch, roll, camera, lighting, rng))
        out["collision"].append(label.collision)
        out["steering"].append(label.steering)
        out["nearest"].append(label.nearest_ahead)
        out["pose"].append((*pos, yaw, pitch, roll))
        out["world"].append(seed)
        out["family"].append(W.COURSE_KINDS.index(course.kind))
        out["textured"].append(not app.plain)
    dtypes = {"images": np.uint8, "collision": np.uint8, "steering": np.float32, "nearest": np.float32,
              "pose": np.float32, "world": np.int64, "family": np.uint8, "textured": np.uint8}
    return {k: np.asarray(v, dtype=dtypes[k]) for k, v in out.items()}


def _render_task(args):
    return render_world(*args)


# ---------------------------------------------------------------------------------
# Whole splits
# ---------------------------------------------------------------------------------


def split_seeds(split: str, worlds: int, offset: int = 0) -> list[int]:
    if split not in SPLIT_SEED_BASE:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLIT_SEED_BASE)}")
    if worlds <= 0 or offset < 0 or offset + worlds > 1_000_000:
        raise ValueError("worlds must be positive and offset + worlds <= 1e6 (seed ranges must stay disjoint)")
    base = SPLIT_SEED_BASE[split] + offset
    return list(range(base, base + worlds))


def generate_split(split: str, worlds: int, frames_per_world: int = DEFAULT_FRAMES_PER_WORLD, size: int = 128,
                   workers: int = 2, offset: int = 0, progress: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """Render a split; returns (arrays, manifest)."""
    from tqdm import tqdm

    from . import world as W

    seeds = split_seeds(split, worlds, offset)
    tasks = [(s, frames_per_world, size, split_families(split), SPLIT_SCENES[split][1]) for s in seeds]
    start = time.time()
    parts = []
    with tqdm(total=len(seeds) * frames_per_world, desc=f"gen-data {split}", unit="frame", disable=not progress) as bar:
        if workers > 1:
            with mp.get_context("fork").Pool(workers) as pool:
                for part in pool.imap(_render_task, tasks):
                    parts.append(part)
                    bar.update(frames_per_world)
        else:
            for task in tasks:
                parts.append(_render_task(task))
                bar.update(frames_per_world)
    arrays = {k: np.concatenate([p[k] for p in parts]) for k in ARRAYS}
    coll = arrays["collision"].astype(bool)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "split": split,
        "seeds": {"first": seeds[0], "last": seeds[-1], "count": len(seeds)},
        "frames_per_world": frames_per_world,
        "count": int(len(coll)),
        "image_size": size,
        "families": list(split_families(split)),
        "family_names": list(W.COURSE_KINDS),
        "appearance_pool": SPLIT_SCENES[split][1],
        "textured_fraction": round(float(arrays["textured"].mean()), 4),
        "collision_fraction": round(float(coll.mean()), 4),
        "steering_abs_mean": round(float(np.abs(arrays["steering"]).mean()), 4),
        "steering_left_right": [int((arrays["steering"] < 0).sum()), int((arrays["steering"] > 0).sum())],
        "camera": dataclasses.asdict(dataclasses.replace(W.DRONE_CAMERA, resolution=(size, size))),
        "labels": dataclasses.asdict(W.DEFAULT_LABELS),
        "poses": dataclasses.asdict(PoseParams()),
        "seconds": round(time.time() - start, 1),
    }
    return arrays, manifest


def save_split(path: Path, arrays: dict[str, np.ndarray], manifest: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, manifest=np.array(json.dumps(manifest)), **arrays)
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")


@dataclass
class Dataset:
    images: np.ndarray       # (N, S, S, 3) uint8 RGB
    collision: np.ndarray    # (N,) uint8 0/1
    steering: np.ndarray     # (N,) float32 in [-1, 1], negative = left
    nearest: np.ndarray      # (N,) float32 metres
    pose: np.ndarray         # (N, 6) x, y, z, yaw, pitch, roll
    world: np.ndarray        # (N,) world seed
    family: np.ndarray       # (N,) index into manifest["family_names"]
    textured: np.ndarray     # (N,) 1 = re-textured world, 0 = rendered as in flight
    manifest: dict

    def __len__(self) -> int:
        return len(self.collision)


def load_dataset(path) -> Dataset:
    """Load a split written by ``spinn gen-data``; errors name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset {path}: no such file (generate it with 'spinn gen-data')")
    try:
        with np.load(path, allow_pickle=False) as z:
            contents = {k: z[k] for k in z.files}
    except Exception as e:  # zip, pickle-refused or truncated-array errors all mean a damaged file
        raise ValueError(f"dataset {path}: unreadable or corrupt ({type(e).__name__}: {e})") from e
    missing = [k for k in (*ARRAYS, "manifest") if k not in contents]
    if missing:
        raise ValueError(f"dataset {path}: not a spinn dataset (missing {', '.join(missing)})")
    data = {k: contents[k] for k in ARRAYS}
    try:
        manifest = json.loads(str(contents["manifest"]))
    except json.JSONDecodeError as e:
        raise ValueError(f"dataset {path}: corrupt manifest ({e})") from e
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ValueError(f"dataset {path}: format {manifest.get('format')!r} v{manifest.get('version')}, "
                         f"expected {FORMAT!r} v{VERSION}")
    n = len(data["collision"])
    if any(len(v) != n for v in data.values()) or data["images"].ndim != 4 or data["images"].shape[-1] != 3:
        raise ValueError(f"dataset {path}: inconsistent array shapes")
    return Dataset(manifest=manifest, **data)


# ---------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="spinn gen-data",
        description="Render labelled onboard-camera frames from procedural obstacle worlds "
                    "(pybullet, no physics stepping). Splits use disjoint world-seed ranges: "
                    + ", ".join(f"{k} from {v}" for k, v in SPLIT_SEED_BASE.items()) + ".",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--out", type=Path, default=Path("data"), help="output folder (one <split>.npz + .json per split)")
    ap.add_argument("--splits", nargs="+", default=list(SPLIT_SEED_BASE), choices=list(SPLIT_SEED_BASE),
                    help="splits to generate")
    ap.add_argument("--worlds", type=int, default=None,
                    help="worlds per split (default: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_WORLDS.items()) + ")")
    ap.add_argument("--frames-per-world", type=int, default=DEFAULT_FRAMES_PER_WORLD)
    ap.add_argument("--size", type=int, default=128, help="square frame size in pixels (the camera resolution)")
    ap.add_argument("--offset", type=int, default=0, help="skip this many seeds of each split's range")
    ap.add_argument("--workers", type=int, default=2, help="rendering processes")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.frames_per_world <= 0 or args.size < 16 or args.workers < 1 or (args.worlds is not None and args.worlds <= 0):
        print("spinn gen-data: --frames-per-world, --worlds, --workers must be positive and --size >= 16", file=sys.stderr)
        return 2
    for split in args.splits:
        worlds = args.worlds or DEFAULT_WORLDS[split]
        arrays, manifest = generate_split(split, worlds, args.frames_per_world, args.size, args.workers, args.offset,
                                          progress=not args.quiet)
        path = args.out / f"{split}.npz"
        save_split(path, arrays, manifest)
        print(f"{path}: {manifest['count']} frames from {worlds} worlds, "
              f"collision {manifest['collision_fraction']:.1%}, {manifest['seconds']} s, "
              f"{path.stat().st_size / 1e6:.1f} MB")
    return 0
