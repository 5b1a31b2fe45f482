"""Worlds, camera and dataset generator: determinism, label sanity, PyFlyt camera parity."""
import json
import math

import numpy as np
import pytest

pytest.importorskip("pybullet")

from spinn_ros.sim import dataset as D  # noqa: E402
from spinn_ros.sim import world as W  # noqa: E402


def one_box_course(center=(2.0, 0.0), size=(0.2, 4.0, 3.0)):
    wall = W.Obstacle("box", center, size, 0.0, (1.0, 0.0, 0.0, 1.0))
    return W.Course(seed=-1, kind="test", obstacles=(wall,), start=(0, 0, 1), goal=(10, 0, 1), bounds=(0, 10, -4, 4))


def empty_course():
    return W.Course(seed=-1, kind="test", obstacles=(), start=(0, 0, 1), goal=(10, 0, 1), bounds=(0, 10, -4, 4))


@pytest.fixture(scope="module")
def client():
    import pybullet as p
    from pybullet_utils import bullet_client

    c = bullet_client.BulletClient(p.DIRECT)
    yield c
    c.disconnect()


def test_course_is_deterministic_per_seed_and_varies_across_seeds():
    assert W.generate_course(7) == W.generate_course(7)
    kinds = {W.generate_course(s).kind for s in range(12)}
    assert len(kinds) >= 3
    assert W.generate_course(7).obstacles != W.generate_course(8).obstacles


def test_course_keeps_start_and_goal_clear_and_builds_every_obstacle(client):
    for seed in range(5):
        course = W.generate_course(seed)
        assert course.clearance(course.start) > 1.0 and course.clearance(course.goal) > 1.0
        _, ids = W.new_world(course, client)
        assert len(ids) == len(course.obstacles) and len(set(ids)) == len(ids)


def test_walls_course_has_walls_with_a_gap():
    course = W.generate_course(3, kind="walls")
    assert course.walls >= 1
    a, b = course.obstacles[0], course.obstacles[1]      # the two halves of the first wall
    gap = (b.center[1] - b.size[1] / 2) - (a.center[1] + a.size[1] / 2)
    assert 0.8 < gap < 2.0


def test_wall_ahead_is_a_collision_and_open_field_is_not(client):
    W.new_world(one_box_course(center=(1.0, 0.0)), client)
    wall = W.ground_truth(client, (0.0, 0.0, 1.0), yaw=0.0)
    assert wall.collision and wall.nearest_ahead == pytest.approx(0.9 - 0.028, abs=0.05)

    W.new_world(empty_course(), client)
    open_field = W.ground_truth(client, (0.0, 0.0, 1.0), yaw=0.3, pitch=0.1, roll=-0.1)
    assert not open_field.collision and open_field.steering == 0.0


def test_far_wall_and_low_box_are_not_collisions(client):
    W.new_world(one_box_course(center=(3.0, 0.0)), client)
    assert not W.ground_truth(client, (0.0, 0.0, 1.0), 0.0).collision
    W.new_world(one_box_course(center=(1.0, 0.0), size=(0.5, 0.5, 0.5)), client)   # flown over at 1 m
    assert not W.ground_truth(client, (0.0, 0.0, 1.0), 0.0).collision


def test_steering_points_away_from_the_obstacle(client):
    # a wall covering the right half of the view (y < 0): the open side is left = negative steering
    W.new_world(one_box_course(center=(1.5, -2.0), size=(0.2, 4.0, 3.0)), client)
    assert W.ground_truth(client, (0.0, 0.0, 1.0), 0.0).steering < -0.1
    W.new_world(one_box_course(center=(1.5, 2.0), size=(0.2, 4.0, 3.0)), client)
    assert W.ground_truth(client, (0.0, 0.0, 1.0), 0.0).steering > 0.1


def test_render_sees_the_wall_and_is_deterministic(client):
    W.new_world(one_box_course(center=(1.0, 0.0)), client)
    img = W.render_camera(client, (0.0, 0.0, 1.0), 0.0)
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    r, g, b = img[40:90, 40:90].reshape(-1, 3).mean(0)
    assert r > 100 and g < 60 and b < 60            # the red wall fills the centre
    np.testing.assert_array_equal(img, W.render_camera(client, (0.0, 0.0, 1.0), 0.0))


def test_camera_matches_pyflyt_onboard_camera():
    """Frames rendered for a pose equal what PyFlyt's drone camera captures there."""
    pytest.importorskip("PyFlyt")
    from PyFlyt.core import Aviary

    pos, rpy = np.array([[1.0, 0.3, 1.2]]), np.array([[0.05, 0.1, 0.4]])
    env = Aviary(start_pos=pos, start_orn=rpy, drone_type="quadx", drone_options={"use_camera": True}, render=False)
    try:
        W.build_course(env, W.generate_course(5))
        env.register_all_new_bodies()
        rgba, _, _ = env.drones[0].camera.capture_image()
        mine = W.render_camera(env, pos[0], yaw=rpy[0, 2], pitch=rpy[0, 1], roll=rpy[0, 0])
        np.testing.assert_array_equal(np.asarray(rgba)[:, :, :3], mine)
    finally:
        env.disconnect()


def test_render_world_is_deterministic_and_labels_are_balanced_enough():
    a = D.render_world(3_000_500, 12, 64)
    b = D.render_world(3_000_500, 12, 64)
    for key in D.ARRAYS:
        np.testing.assert_array_equal(a[key], b[key])
    assert a["images"].shape == (12, 64, 64, 3)
    assert np.all(np.abs(a["steering"]) <= 1)
    assert set(np.unique(a["collision"])) <= {0, 1}


def test_split_seed_ranges_are_disjoint():
    seeds = {s: set(D.split_seeds(s, D.DEFAULT_WORLDS[s] * 10)) for s in D.SPLIT_SEED_BASE}
    names = list(seeds)
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            assert not seeds[x] & seeds[y]
    with pytest.raises(ValueError):
        D.split_seeds("train", 0)


def test_gen_data_cli_writes_split_and_manifest(tmp_path):
    argv = ["--out", str(tmp_path), "--splits", "test", "--worlds", "2", "--frames-per-world", "5",
            "--size", "64", "--workers", "1", "--quiet"]
    assert D.main(argv) == 0
    ds = D.load_dataset(tmp_path / "test.npz")
    assert len(ds) == 10 and ds.images.shape == (10, 64, 64, 3)
    manifest = json.loads((tmp_path / "test.json").read_text())
    assert manifest == ds.manifest
    assert manifest["seeds"] == {"first": D.SPLIT_SEED_BASE["test"], "last": D.SPLIT_SEED_BASE["test"] + 1, "count": 2}
    assert manifest["collision_fraction"] == pytest.approx(ds.collision.mean(), abs=1e-4)


def test_load_dataset_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        D.load_dataset(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="bad.npz.*corrupt"):
        D.load_dataset(bad)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(ValueError, match="other.npz.*not a spinn dataset"):
        D.load_dataset(other)


def test_pose_sampler_stays_clear_of_obstacles():
    course = W.generate_course(11)
    rng = np.random.default_rng(0)
    for _ in range(50):
        pos, yaw, pitch, roll = D.sample_pose(rng, course)
        assert course.clearance(pos) >= D.PoseParams().min_clearance
        assert abs(pitch) <= math.radians(15) + 1e-9 and abs(roll) <= math.radians(15) + 1e-9


# ---------------------------------------------------------------------------------
# Scene families, appearance randomisation, the generalisation splits
# ---------------------------------------------------------------------------------

NEW_FAMILIES = [k for k in W.COURSE_KINDS if k not in W.LEGACY_KINDS]


def test_legacy_courses_keep_their_obstacles():
    """Flights and their tests rely on a seed giving the same legacy course as before."""
    course = W.generate_course(4, "forest")
    assert course.kind == "forest" and all(o.base == 0.0 and o.group == -1 for o in course.obstacles)
    assert W.generate_course(4, "forest") == course
    assert W.generate_course(7).kind in W.LEGACY_KINDS


@pytest.mark.parametrize("kind", NEW_FAMILIES)
def test_new_families_block_the_straight_path_and_are_deterministic(client, kind):
    for seed in range(5):
        course = W.generate_course(seed, kind)
        assert course == W.generate_course(seed, kind) and course.kind == kind
        assert course.clearance(course.start) > 1.5 and course.clearance(course.goal) > 1.5
        client.resetSimulation()
        W.build_course(client, course)
        hit = client.rayTest(list(course.start), list(course.goal))[0]
        assert hit[0] >= 0, f"{kind} seed {seed}: nothing on the straight line to the goal"


def test_families_split_into_trained_and_unseen():
    assert set(W.TRAIN_FAMILIES) | set(W.UNSEEN_FAMILIES) == set(W.COURSE_KINDS)
    assert not set(W.TRAIN_FAMILIES) & set(W.UNSEEN_FAMILIES) and len(W.COURSE_KINDS) >= 6
    assert set(D.split_families("train")) == set(W.TRAIN_FAMILIES)
    assert set(D.split_families("test-families")) == set(W.UNSEEN_FAMILIES)


def test_a_beam_is_a_collision_at_its_height_only(client):
    beam = W.Obstacle("box", (2.0, 0.0), (0.3, 4.0, 0.4), 0.0, (1, 0, 0, 1), base=1.6)
    course = W.Course(seed=-1, kind="test", obstacles=(beam,), start=(0, 0, 1), goal=(10, 0, 1), bounds=(0, 10, -4, 4))
    client.resetSimulation()
    W.build_course(client, course)
    under = W.ground_truth(client, (1.0, 0.0, 1.0), 0.0)
    at = W.ground_truth(client, (1.0, 0.0, 1.78), 0.0)
    assert not under.collision and at.collision
    assert beam.distance((2.0, 0.0, 1.0)) == pytest.approx(0.6)


def test_appearance_pools_are_disjoint():
    from spinn_ros.sim import appearance as A

    assert not set(A.TRAIN_POOL.textures) & set(A.HELDOUT_POOL.textures)
    assert not set(A.TRAIN_POOL.palettes) & set(A.HELDOUT_POOL.palettes)
    assert A.HELDOUT_POOL.plain_share == 0


@pytest.mark.parametrize("kind", ["noise", "stripes", "bricks", "gradient", "speckle", "checker", "mixed",
                                  "cells", "waves", "dots", "camo", "flat"])
def test_every_texture_is_a_valid_colour_field(kind):
    from spinn_ros.sim import appearance as A

    tex = A.Texture(kind, ((0.1, 0.2, 0.3), (0.9, 0.8, 0.7), (0.5, 0.5, 0.5)), 2.0, (1.0, 0.0, 0.0), 3)
    pts = np.random.default_rng(0).uniform(-5, 5, size=(500, 3))
    rgb = A.texture_rgb(tex, pts)
    assert rgb.shape == (500, 3) and np.isfinite(rgb).all() and rgb.min() >= 0 and rgb.max() <= 1
    np.testing.assert_array_equal(rgb, A.texture_rgb(tex, pts))
    if kind != "flat":
        assert rgb.std(axis=0).max() > 0.01, "a texture must vary over the surface"


def test_world_points_invert_the_camera(client):
    """The textures sit on the surfaces: depth-buffer pixels map back onto the wall's face."""
    from spinn_ros.sim import appearance as A

    client.resetSimulation()
    W.build_course(client, one_box_course(center=(3.0, 0.0), size=(0.2, 8.0, 4.0)))
    view, proj = W.camera_matrices(client, (0.0, 0.0, 1.0), 0.0)
    _, _, _, depth, seg = client.getCameraImage(128, 128, viewMatrix=view, projectionMatrix=proj)
    pts = A.world_points(np.asarray(depth).reshape(128, 128), view, proj)
    wall = np.asarray(seg).reshape(128, 128) == 0
    assert wall.sum() > 1000
    np.testing.assert_allclose(pts[wall][:, 0], 2.9, atol=0.02)


def test_textured_and_heldout_worlds_render_reproducibly():
    a = D.render_world(4_000_001, 4, 64, W.UNSEEN_FAMILIES, "heldout")
    b = D.render_world(4_000_001, 4, 64, W.UNSEEN_FAMILIES, "heldout")
    for key in D.ARRAYS:
        np.testing.assert_array_equal(a[key], b[key])
    assert a["textured"].all() and {W.COURSE_KINDS[f] for f in a["family"]} <= set(W.UNSEEN_FAMILIES)
    assert a["images"].std() > 5


def test_camera_effects_keep_the_frame_and_jpeg_blocks_it():
    from spinn_ros.sim import appearance as A

    img = np.random.default_rng(1).uniform(0, 1, size=(64, 64, 3))
    out = A.camera_effects(img, np.random.default_rng(2))
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    smooth = np.tile(np.linspace(0, 1, 64)[None, :, None], (64, 1, 3))
    np.testing.assert_allclose(A.jpeg_like(smooth, 90), smooth, atol=0.05)
    assert np.abs(A.jpeg_like(img, 20) - img).mean() > 0.05
