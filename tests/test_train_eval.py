"""Training lowers the loss and resumes exactly; evaluation runs end to end and is reproducible."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import needs_torch

pytestmark = needs_torch

TINY = dict(batch_size=4, crop=64, pool_size=6, amplifier_samples=64, warmup=5, lr=1e-3, log_every=5, checkpoint_every=10)


def test_short_training_lowers_the_loss(tmp_path):
    from toolkit.training.trainer import TrainConfig, train

    result = train(TrainConfig(steps=60, **TINY), tmp_path, show_progress=False)
    rows = [json.loads(json.dumps(r)) for r in __import__("csv").DictReader(open(tmp_path / "loss.csv"))]
    first = np.mean([float(r["l1"]) for r in rows[:2]])
    last = np.mean([float(r["l1"]) for r in rows[-2:]])
    assert last < 0.8 * first, (first, last)
    for name in ("llpacknet.pt", "loss.csv", "loss.png", "train_state.pt", "train_record.json"):
        assert (tmp_path / name).exists()
    assert result["amplifier_fit_median_log_error"] < 0.6
    from toolkit import load_model

    model = load_model(result["checkpoint"])  # the final file is an official-layout checkpoint
    assert model.variant == "llpacknet-bmvc2020"


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    import torch

    from toolkit.data import dataset
    from toolkit.training.trainer import TrainConfig, train

    cfg = TrainConfig(steps=30, **TINY)
    train(cfg, tmp_path / "straight", show_progress=False)
    original = dataset.TrainingSampler.batch

    def crash_at_25(self, step):
        if step == 25:
            raise KeyboardInterrupt("simulated crash")
        return original(self, step)

    monkeypatch.setattr(dataset.TrainingSampler, "batch", crash_at_25)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed", show_progress=False)
    assert not (tmp_path / "resumed" / "llpacknet.pt").exists()
    assert not list((tmp_path / "resumed").glob("*.part"))
    monkeypatch.setattr(dataset.TrainingSampler, "batch", original)
    train(cfg, tmp_path / "resumed", show_progress=False)
    a = torch.load(tmp_path / "straight" / "llpacknet.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "llpacknet.pt", weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


def test_resume_refuses_other_settings(tmp_path):
    from toolkit.errors import UserError
    from toolkit.training.trainer import TrainConfig, train

    train(TrainConfig(steps=10, **TINY), tmp_path, show_progress=False)
    with pytest.raises(UserError, match="seed"):
        train(TrainConfig(steps=20, **{**TINY, "seed": 5}), tmp_path, show_progress=False)


def test_evaluation_end_to_end_on_two_images(tmp_path):
    from toolkit.training.evaluate import evaluate

    report = evaluate(None, "true", tmp_path, limit=2, show_progress=False)
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    for part in ("model", "baseline"):
        assert set(saved[part]) >= {"psnr_db", "ssim", "per_ratio"}
        assert set(saved[part]["per_ratio"]) == {"100", "250"}
    assert saved["images"] == 2 and (tmp_path / "grid.png").exists()
    assert report["baseline"]["psnr_db"] == saved["baseline"]["psnr_db"]
    assert 5 < saved["baseline"]["psnr_db"] < 40


def test_committed_weights_reproduce_their_recorded_evaluation(tmp_path):
    from toolkit.model.checkpoint import DEFAULT_CHECKPOINT, file_sha256
    from toolkit.training.evaluate import evaluate

    record_file = DEFAULT_CHECKPOINT.with_suffix(".json")
    if not DEFAULT_CHECKPOINT.exists():
        pytest.skip("no default weights committed yet")
    record = json.loads(record_file.read_text())
    assert record["sha256"] == file_sha256(DEFAULT_CHECKPOINT)
    for mode in ("auto", "true"):
        report = evaluate(None, mode, None, show_progress=False)
        recorded = record["evaluation"][mode]
        assert report["model"]["psnr_db"] == pytest.approx(recorded["model"]["psnr_db"], abs=1e-3)
        assert report["baseline"]["psnr_db"] == pytest.approx(recorded["baseline"]["psnr_db"], abs=1e-3)
        assert report["model"]["ssim"] == pytest.approx(recorded["model"]["ssim"], abs=1e-4)
