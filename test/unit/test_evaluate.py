"""spinn evaluate: the three test splits side by side (in distribution, unseen families,
unseen appearance), metrics checked against hand-computed values."""
import json

import numpy as np
import pytest

pytest.importorskip("pybullet")

from spinn_ros.training import evaluate as E  # noqa: E402


def test_roc_auc_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    score, label = rng.random(300).round(2), rng.random(300) < 0.3     # rounded: ties on purpose
    pos, neg = score[label], score[~label]
    pairs = (pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()
    assert E.roc_auc(score, label) == pytest.approx(pairs)
    assert E.roc_auc([0.1, 0.9], [False, True]) == 1.0 and np.isnan(E.roc_auc([0.5], [True]))


def test_evaluate_reports_the_three_splits_with_the_shipped_model(tmp_path, capsys):
    from spinn_ros.sim.dataset import TEST_SPLITS
    from spinn_ros.sim.dataset import main as gen_data

    assert gen_data(["--out", str(tmp_path), "--splits", *TEST_SPLITS, "--worlds", "2", "--frames-per-world", "12",
                     "--workers", "1", "--quiet"]) == 0
    capsys.readouterr()
    assert E.main(["--checkpoint", "default", "--data", str(tmp_path), "--plot", str(tmp_path / "r.png"),
                   "--json", str(tmp_path / "r.json"), "--quiet", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "test-families" in line and "test-appearance" in line)
    assert header.split() == list(TEST_SPLITS)
    for metric in ("ROC AUC", "confident errors", "steering sign", "final-exit ECE"):
        assert metric in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert set(report) == set(TEST_SPLITS)
    unseen = set(report["test-families"]["families"])
    assert unseen and unseen <= {"composite", "gates"}
    rob = report["test"]["robustness"]
    assert 0 <= rob["confident_error_rate"] <= 1 and rob["reference_threshold"] == E.reference_threshold()
    assert (tmp_path / "r.png").is_file()
