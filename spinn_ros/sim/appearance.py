"""Randomised appearance for training frames: textures, ground, sky, haze, camera effects.

The renderer (pybullet's TinyRenderer) only draws flat colours, so a world rendered as
it is teaches a model flat saturated colours on a checkered plane, not geometry. Here a
*textured* world is rendered once with every surface mid-grey, which yields the shading
(diffuse light, specular, shadows) per pixel; the depth buffer gives each pixel's world
position, the segmentation mask says which surface it belongs to, and each surface gets
a *solid* procedural texture evaluated at that position (so textures stay fixed on the
object and shrink with distance, as real ones do). Sky, haze and camera effects (noise,
blur, exposure, white balance, JPEG-like block artefacts, vignetting) follow.

Textures and palettes come in two disjoint pools: :data:`TRAIN_POOL` (what training
sees) and :data:`HELDOUT_POOL` (only the unseen-appearance test split). Everything is
drawn from a ``numpy.random.Generator``, so frames stay reproducible from the seed.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np

#: solid textures; the held-out ones never appear in training
TRAIN_TEXTURES = ("flat", "noise", "stripes", "bricks", "gradient", "speckle", "checker", "mixed")
HELDOUT_TEXTURES = ("cells", "waves", "dots", "camo")

#: palettes as HSV ranges ((h lo, h hi), (s lo, s hi), (v lo, v hi)); hue ranges wrap
PALETTES = {
    "vivid": ((0.0, 1.0), (0.6, 1.0), (0.5, 1.0)),
    "earth": ((0.02, 0.12), (0.3, 0.7), (0.2, 0.7)),
    "urban": ((0.0, 1.0), (0.0, 0.12), (0.2, 0.9)),
    "pastel": ((0.0, 1.0), (0.15, 0.35), (0.75, 1.0)),
    "foliage": ((0.2, 0.42), (0.3, 0.8), (0.15, 0.6)),
    # held out
    "neon": ((0.0, 1.0), (0.85, 1.0), (0.05, 1.0)),
    "desert": ((0.07, 0.15), (0.15, 0.45), (0.55, 0.95)),
    "ice": ((0.5, 0.66), (0.03, 0.35), (0.65, 1.0)),
}
TRAIN_PALETTES = ("vivid", "earth", "urban", "pastel", "foliage")
HELDOUT_PALETTES = ("neon", "desert", "ice")


@dataclass(frozen=True)
class Pool:
    """What an appearance may be drawn from."""

    name: str
    textures: tuple[str, ...]
    palettes: tuple[str, ...]
    plain_share: float           # worlds rendered as the flight simulator does (flat colours, checkered plane)


TRAIN_POOL = Pool("train", TRAIN_TEXTURES, TRAIN_PALETTES, plain_share=0.3)
HELDOUT_POOL = Pool("heldout", HELDOUT_TEXTURES, HELDOUT_PALETTES, plain_share=0.0)
POOLS = {p.name: p for p in (TRAIN_POOL, HELDOUT_POOL)}


@dataclass(frozen=True)
class Texture:
    kind: str
    colors: tuple[tuple[float, float, float], ...]   # 3 RGB colours in [0, 1]
    scale: float                                      # features per metre
    direction: tuple[float, float, float]             # stripes / gradients
    seed: int


@dataclass(frozen=True)
class Marking:
    """A flat shape painted on the ground: not an obstacle (lines, patches, puddles)."""

    shape: str                      # "line" | "disk" | "rect"
    center: tuple[float, float]
    size: tuple[float, float]       # line: (length, width); disk: (r, r); rect: (sx, sy)
    angle: float
    color: tuple[float, float, float]


@dataclass(frozen=True)
class Appearance:
    """One world's look. ``plain``: rendered as in flight, no post-processing of surfaces."""

    pool: str
    plain: bool
    ground: Texture | None = None
    obstacles: tuple[Texture, ...] = ()
    markings: tuple[Marking, ...] = ()
    sky: tuple[tuple[float, float, float], tuple[float, float, float]] = ((0.8, 0.85, 0.9), (0.35, 0.55, 0.85))
    clouds: float = 0.0
    visibility: float = 200.0       # metres; haze = 1 - exp(-distance / visibility)


# ---------------------------------------------------------------------------------
# Drawing an appearance
# ---------------------------------------------------------------------------------


def random_color(rng, palette: str) -> tuple[float, float, float]:
    (h0, h1), (s0, s1), (v0, v1) = PALETTES[palette]
    h = rng.uniform(h0, h1) % 1.0
    return colorsys.hsv_to_rgb(h, rng.uniform(s0, s1), rng.uniform(v0, v1))


def random_texture(rng, pool: Pool, scale: tuple[float, float] = (0.5, 6.0)) -> Texture:
    palette = str(rng.choice(pool.palettes))
    colors = tuple(random_color(rng, palette) for _ in range(3))
    d = rng.normal(size=3)
    return Texture(kind=str(rng.choice(pool.textures)), colors=colors,
                   scale=float(math.exp(rng.uniform(math.log(scale[0]), math.log(scale[1])))),
                   direction=tuple(float(v) for v in d / np.linalg.norm(d)), seed=int(rng.integers(1 << 30)))


def random_markings(rng, course, pool: Pool, count: tuple[int, int] = (4, 16)) -> tuple[Marking, ...]:
    """Ground paint and patches, some on the straight path and beside obstacles."""
    xmin, xmax, ymin, ymax = course.bounds
    palette = str(rng.choice(pool.palettes))
    out = []
    for _ in range(int(rng.integers(*count))):
        if course.obstacles and rng.random() < 0.3:
            o = course.obstacles[rng.integers(len(course.obstacles))]
            c = np.asarray(o.center) + rng.normal(0, 1.2, size=2)
        elif rng.random() < 0.4:
            c = np.array([rng.uniform(0, course.goal[0]), rng.normal(0, 0.5)])    # on the way to the goal
        else:
            c = np.array([rng.uniform(xmin - 2, xmax + 2), rng.uniform(ymin - 1, ymax + 1)])
        shape = str(rng.choice(("line", "disk", "rect")))
        size = ((rng.uniform(1, 8), rng.uniform(0.05, 0.3)) if shape == "line"
                else (rng.uniform(0.2, 1.5),) * 2 if shape == "disk" else tuple(rng.uniform(0.3, 3.0, size=2)))
        color = random_color(rng, palette) if rng.random() < 0.7 else tuple(rng.uniform(0.05, 0.2, size=3))
        out.append(Marking(shape, (float(c[0]), float(c[1])), tuple(float(s) for s in size),
                           float(rng.uniform(0, math.pi)), tuple(float(v) for v in color)))
    return tuple(out)


def random_appearance(rng, course, pool: Pool) -> Appearance:
    """A world's look, drawn from ``pool``; obstacles of one group share a texture."""
    if rng.random() < pool.plain_share:
        return Appearance(pool=pool.name, plain=True)
    groups: dict[int, Texture] = {}
    textures = []
    for i, o in enumerate(course.obstacles):
        key = o.group if o.group >= 0 else -1 - i
        if key not in groups:
            groups[key] = random_texture(rng, pool)
        textures.append(groups[key])
    horizon = colorsys.hsv_to_rgb(rng.uniform(0.0, 1.0), rng.uniform(0.0, 0.3), rng.uniform(0.55, 1.0))
    zenith = colorsys.hsv_to_rgb(rng.uniform(0.5, 0.7), rng.uniform(0.1, 0.8), rng.uniform(0.3, 1.0))
    return Appearance(
        pool=pool.name, plain=False,
        ground=random_texture(rng, pool, scale=(0.3, 4.0)),
        obstacles=tuple(textures),
        markings=random_markings(rng, course, pool) if rng.random() < 0.8 else (),
        sky=(horizon, zenith),
        clouds=float(rng.uniform(0, 1) if rng.random() < 0.5 else 0.0),
        visibility=float(math.exp(rng.uniform(math.log(12.0), math.log(300.0)))),
    )


# ---------------------------------------------------------------------------------
# Solid textures: (N, 3) world points -> (N, 3) RGB
# ---------------------------------------------------------------------------------


def _hash(ix, iy, iz, seed: int) -> np.ndarray:
    h = (ix * 73856093) ^ (iy * 19349663) ^ (iz * 83492791) ^ (seed * 2654435761)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h ^ (h >> 16)) & 0xFFFFFF).astype(np.float64) / 0xFFFFFF


def value_noise(p: np.ndarray, seed: int) -> np.ndarray:
    """Smooth lattice noise in [0, 1] at (N, 3) points (trilinear, smoothstep weights)."""
    f = np.floor(p)
    i = f.astype(np.int64)
    t = p - f
    t = t * t * (3 - 2 * t)
    out = np.zeros(len(p))
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                w = ((t[:, 0] if dx else 1 - t[:, 0]) * (t[:, 1] if dy else 1 - t[:, 1])
                     * (t[:, 2] if dz else 1 - t[:, 2]))
                out += w * _hash(i[:, 0] + dx, i[:, 1] + dy, i[:, 2] + dz, seed)
    return out


def fbm(p: np.ndarray, seed: int, octaves: int = 3) -> np.ndarray:
    total, amp, norm = np.zeros(len(p)), 1.0, 0.0
    for o in range(octaves):
        total += amp * value_noise(p * (2 ** o), seed + o)
        norm += amp
        amp *= 0.5
    return total / norm


def _mix(a, b, t) -> np.ndarray:
    t = np.clip(t, 0, 1)[:, None]
    return np.asarray(a)[None] * (1 - t) + np.asarray(b)[None] * t


def _cells(q: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Distance to the nearest jittered lattice point and that cell's random value."""
    base = np.floor(q).astype(np.int64)
    best = np.full(len(q), np.inf)
    value = np.zeros(len(q))
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dz in (-1, 0, 1):
                c = base + np.array([dx, dy, dz])
                pt = c + np.stack([_hash(c[:, 0], c[:, 1], c[:, 2], seed + k) for k in range(3)], axis=1)
                d = np.linalg.norm(q - pt, axis=1)
                closer = d < best
                best = np.where(closer, d, best)
                value = np.where(closer, _hash(c[:, 0], c[:, 1], c[:, 2], seed + 7), value)
    return best, value


def texture_rgb(tex: Texture, p: np.ndarray) -> np.ndarray:
    """The texture's colour at world points ``p`` (N, 3)."""
    c0, c1, c2 = tex.colors
    q = p * tex.scale
    d = np.asarray(tex.direction)
    k = tex.kind
    if k == "flat":
        return np.broadcast_to(np.asarray(c0), (len(p), 3)).copy()
    if k == "noise":
        return _mix(c0, c1, fbm(q, tex.seed))
    if k == "stripes":
        return _mix(c0, c1, 0.5 + 2.0 * np.sin(2 * math.pi * q @ d))
    if k == "bricks":
        row = np.floor(q[:, 2] * 2.5)
        u = (q[:, 0] + q[:, 1]) * 1.2 + 0.5 * (row % 2)
        mortar = (np.abs(q[:, 2] * 2.5 - np.round(q[:, 2] * 2.5)) < 0.08) | (np.abs(u - np.round(u)) < 0.05)
        brick = _mix(c0, c1, 0.35 * _hash(np.floor(u).astype(np.int64), row.astype(np.int64), 0, tex.seed))
        return np.where(mortar[:, None], np.asarray(c2)[None], brick)
    if k == "gradient":
        return _mix(c0, c1, 0.5 + 0.5 * np.sin(0.6 * q @ d))
    if k == "speckle":
        dots = value_noise(q * 12.0, tex.seed) > 0.72
        return np.where(dots[:, None], np.asarray(c1)[None], _mix(c0, c2, 0.3 * fbm(q, tex.seed + 3)))
    if k == "checker":
        parity = (np.floor(q[:, 0]) + np.floor(q[:, 1]) + np.floor(q[:, 2])) % 2
        return _mix(c0, c1, parity)
    if k == "mixed":
        a = texture_rgb(Texture("stripes", tex.colors, tex.scale, tex.direction, tex.seed), p)
        b = texture_rgb(Texture("noise", (c2, c0, c1), tex.scale * 2, tex.direction, tex.seed + 1), p)
        return np.where((fbm(q * 0.5, tex.seed + 5) > 0.5)[:, None], a, b)
    if k == "cells":
        dist, val = _cells(q, tex.seed)
        return np.where((dist > 0.75)[:, None], np.asarray(c2)[None], _mix(c0, c1, val))
    if k == "waves":
        warp = q @ d + 0.6 * np.sin(3.0 * q[:, (np.argmax(np.abs(d)) + 1) % 3])
        return _mix(c0, c1, 0.5 + 0.5 * np.sin(4 * warp))
    if k == "dots":
        r = np.linalg.norm(q * 2 - np.round(q * 2), axis=1)
        return np.where((r < 0.3)[:, None], np.asarray(c1)[None], np.asarray(c0)[None])
    if k == "camo":
        n = fbm(q * 0.7, tex.seed, octaves=4)
        return np.where((n < 0.45)[:, None], np.asarray(c0)[None], np.where((n < 0.58)[:, None], np.asarray(c1)[None],
                                                                          np.asarray(c2)[None]))
    raise ValueError(f"unknown texture {k!r}")


def markings_rgb(markings, xy: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Paint ground markings over ``base`` colours at ground points ``xy`` (N, 2)."""
    out = base.copy()
    for m in markings:
        c, s = math.cos(m.angle), math.sin(m.angle)
        rel = xy - np.asarray(m.center)
        u, v = rel[:, 0] * c + rel[:, 1] * s, -rel[:, 0] * s + rel[:, 1] * c
        if m.shape == "disk":
            inside = u * u + v * v < m.size[0] ** 2
        else:
            inside = (np.abs(u) < m.size[0] / 2) & (np.abs(v) < m.size[1] / 2)
        out[inside] = m.color
    return out


# ---------------------------------------------------------------------------------
# Composing a frame
# ---------------------------------------------------------------------------------


def world_points(depth: np.ndarray, view, proj) -> np.ndarray:
    """(H, W, 3) world positions of the depth buffer's pixels (OpenGL conventions)."""
    h, w = depth.shape
    inv = np.linalg.inv(np.asarray(proj, dtype=np.float64).reshape(4, 4).T @ np.asarray(view, dtype=np.float64).reshape(4, 4).T)
    xs = (2 * (np.arange(w) + 0.5) / w - 1)[None, :].repeat(h, 0)
    ys = (1 - 2 * (np.arange(h) + 0.5) / h)[:, None].repeat(w, 1)
    ndc = np.stack([xs, ys, 2 * depth.astype(np.float64) - 1, np.ones_like(xs)], axis=-1).reshape(-1, 4)
    world = ndc @ inv.T
    return (world[:, :3] / world[:, 3:]).reshape(h, w, 3)


def compose(app: Appearance, shading: np.ndarray, depth: np.ndarray, seg: np.ndarray, view, proj, eye,
            ground_id: int, obstacle_ids: dict[int, int]) -> np.ndarray:
    """Float RGB (H, W, 3) in [0, 1+] of a textured world from its grey render.

    ``shading``: the grey render's RGB / mid-grey (light per pixel, shadows included);
    ``obstacle_ids``: pybullet body id -> index into ``course.obstacles``.
    """
    h, w = depth.shape
    pts = world_points(depth, view, proj)
    flat_pts, flat_seg = pts.reshape(-1, 3), seg.reshape(-1)
    albedo = np.zeros((h * w, 3))
    ground = flat_seg == ground_id
    if ground.any():
        g = texture_rgb(app.ground, flat_pts[ground])
        albedo[ground] = markings_rgb(app.markings, flat_pts[ground, :2], g)
    for body, index in obstacle_ids.items():
        sel = flat_seg == body
        if sel.any():
            albedo[sel] = texture_rgb(app.obstacles[index], flat_pts[sel])
    rgb = albedo * shading.reshape(-1, 3)
    ray = flat_pts - np.asarray(eye)[None]
    dist = np.linalg.norm(ray, axis=1)
    horizon, zenith = app.sky
    elevation = np.arcsin(np.clip(ray[:, 2] / np.maximum(dist, 1e-9), -1, 1))
    sky_rgb = _mix(horizon, zenith, elevation / (math.pi / 4))
    if app.clouds > 0:
        direction = ray / np.maximum(dist, 1e-9)[:, None]
        cloud = np.clip((fbm(direction * 4.0, 99) - (1 - 0.5 * app.clouds)) * 4, 0, 1)
        sky_rgb = sky_rgb * (1 - cloud[:, None]) + cloud[:, None] * 0.95
    sky = flat_seg < 0
    haze = 1 - np.exp(-dist / app.visibility)
    rgb = np.where(sky[:, None], sky_rgb, rgb * (1 - haze[:, None]) + np.asarray(horizon)[None] * haze[:, None])
    return rgb.reshape(h, w, 3)


# ---------------------------------------------------------------------------------
# Camera effects
# ---------------------------------------------------------------------------------

_DCT = np.array([[math.sqrt((1 if k == 0 else 2) / 8) * math.cos(math.pi * (2 * n + 1) * k / 16)
                  for n in range(8)] for k in range(8)])
_JPEG_LUMA = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=np.float64)


def jpeg_like(img: np.ndarray, quality: int) -> np.ndarray:
    """8x8 block DCT quantisation per channel (JPEG's artefacts without an encoder)."""
    h, w, _ = img.shape
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    q = np.maximum(np.floor((_JPEG_LUMA * scale + 50) / 100), 1)
    hp, wp = -(-h // 8) * 8, -(-w // 8) * 8
    x = np.pad(img * 255 - 128, ((0, hp - h), (0, wp - w), (0, 0)), mode="edge")
    blocks = x.reshape(hp // 8, 8, wp // 8, 8, 3).transpose(0, 2, 4, 1, 3)
    coef = _DCT @ blocks @ _DCT.T
    coef = np.round(coef / q) * q
    back = (_DCT.T @ coef @ _DCT).transpose(0, 3, 1, 4, 2).reshape(hp, wp, 3)
    return ((back[:h, :w] + 128) / 255).clip(0, 1)


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    r = max(1, int(math.ceil(2.5 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(img, ((r, r), (r, r), (0, 0)), mode="edge")
    rows = sum(k[i] * pad[:, i: i + img.shape[1]] for i in range(2 * r + 1))
    return sum(k[i] * rows[i: i + img.shape[0]] for i in range(2 * r + 1))


def camera_effects(img: np.ndarray, rng, strength: float = 1.0) -> np.ndarray:
    """Exposure, white balance, vignetting, blur, sensor noise, compression: float [0,1+] -> uint8."""
    x = img * math.exp(rng.uniform(-0.5, 0.4) * strength)
    x = x * (1 + rng.uniform(-0.15, 0.15, size=3) * strength)[None, None]
    x = np.clip(x, 0, 1) ** math.exp(rng.uniform(-0.25, 0.25) * strength)
    h, w, _ = x.shape
    if rng.random() < 0.3 * strength:
        yy, xx = np.mgrid[0:h, 0:w]
        r2 = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (0.5 * (h * h + w * w) / 2)
        x = x * (1 - rng.uniform(0.1, 0.45) * r2)[:, :, None]
    if rng.random() < 0.35 * strength:
        x = blur(x, rng.uniform(0.4, 1.3))
    if rng.random() < 0.7 * strength:
        x = x + rng.normal(0, rng.uniform(0.005, 0.04), size=x.shape)
    x = np.clip(x, 0, 1)
    if rng.random() < 0.4 * strength:
        x = jpeg_like(x, int(rng.integers(25, 90)))
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
