"nbs/run.ipynb through papermill, as a user runs it: each method on the offline default, shortened."
import json
from pathlib import Path

import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "nbs" / "run.ipynb"
RECORD_KEYS = {"run_id", "params", "hparams", "metrics", "history", "seconds", "device", "env", "n_train_labelled"}


def run(tmp_path, **params):
    out_dir = tmp_path / "runs"
    pm.execute_notebook(str(NB), str(tmp_path / "out.ipynb"), cwd=str(tmp_path), progress_bar=False,
                        parameters=dict(out_dir=str(out_dir), device="cpu", **params))
    (rec,) = [json.loads(f.read_text()) for f in out_dir.glob("*/result.json")]
    return rec, out_dir / rec["run_id"]


@pytest.mark.parametrize("method", ["knn", "lp", "M", "FFT", "SMN", "STN", "topk"])
def test_each_method_writes_a_record(tmp_path, method):
    rec, folder = run(tmp_path, method=method, epochs=1)
    assert RECORD_KEYS <= set(rec), RECORD_KEYS - set(rec)
    assert rec["params"]["method"] == method and rec["params"]["dataset"] == "digits"
    assert 0.0 <= rec["metrics"]["test_acc"] <= 1.0
    assert rec["env"]["torch"]
    if method == "M":
        assert (folder / "mask.smn").exists() and rec["mask_file_bytes"] == (folder / "mask.smn").stat().st_size
        assert 0 < rec["active_frac"] <= 1 and rec["adaptation_bits_1bit"] == rec["n_masked"]
        assert len(rec["history"]) == 1 and not (folder / "checkpoint.pt").exists()
    if method in ("SMN", "topk"):
        assert (folder / "mask.smn").exists() and 0 < rec["active_frac"] <= 1
    if method == "topk":
        assert abs(rec["active_frac"] - 0.5) < 0.01 and rec["density"] == 0.5
    if method in ("SMN", "STN", "topk"):
        assert {"knn_acc", "lp_acc"} <= set(rec["metrics"]) and len(rec["history"]) == 1
    if method in ("knn", "lp"):
        assert rec["history"] == [] and {"knn_acc", "lp_acc"} <= set(rec["metrics"])
        assert len(list((folder.parent / "_embeddings").glob("*.pt"))) == 3   # train/val/test embeddings cached


def test_mask_file_rebuilds_the_adapted_network(tmp_path):
    import torch
    from smn_nb import backbones as B, data as D
    from smn_nb.masking import load_masks
    from smn_nb.train import Classifier, accuracy
    from smn_nb.experiment import _loaders, validate_params
    rec, folder = run(tmp_path, method="M", epochs=1)
    bb = B.get_backbone(rec["params"]["model"])
    info = load_masks(bb, folder / "mask.smn", backbone=rec["params"]["model"])
    head = torch.nn.Linear(bb.spec.embed_dim, len(info["extra"]["head"]["bias"]))
    head.load_state_dict(info["extra"]["head"])
    L = _loaders(validate_params(**{k: v for k, v in rec["params"].items()}), bb.spec, "cpu")
    assert accuracy(Classifier(bb, head), L["test"]) == pytest.approx(rec["metrics"]["test_acc"], abs=1e-9)


def test_rerun_skips_and_bad_parameter_fails_clearly(tmp_path):
    rec, _ = run(tmp_path, method="lp", epochs=1)
    rec2, _ = run(tmp_path, method="lp", epochs=1)
    assert rec2["seconds"] == rec["seconds"]                      # the finished record was reused
    with pytest.raises(pm.PapermillExecutionError, match="is not one of"):
        run(tmp_path, method="LoRA")


def test_topk_at_the_density_smn_found(tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="run it first"):
        run(tmp_path, method="topk", density="smn", epochs=1)
    smn, _ = run(tmp_path, method="SMN", epochs=1, lr=500.0)      # a high lr so the mask really moves in one epoch
    out = tmp_path / "runs"
    pm.execute_notebook(str(NB), str(tmp_path / "out2.ipynb"), cwd=str(tmp_path), progress_bar=False,
                        parameters=dict(out_dir=str(out), device="cpu", method="topk", density="smn", epochs=1, lr=500.0))
    (topk,) = [json.loads(f.read_text()) for f in out.glob("*_topk_*/result.json")]
    assert topk["density"] == smn["active_frac"] < 1.0
    assert abs(topk["active_frac"] - smn["active_frac"]) < 1e-3


@pytest.mark.parametrize("method", ["M", "FFT"])
def test_clip_path_with_zero_shot_head(tmp_path, method):
    "CLIP's route (zero-shot text head, attention/MLP masks) on a tiny random open_clip config, offline."
    rec, folder = run(tmp_path, model="clip-tiny", method=method, epochs=1)
    assert rec["params"]["model"] == "clip-tiny" and 0 <= rec["metrics"]["test_acc"] <= 1
    if method == "M":
        assert rec["n_masked"] == rec["adaptation_bits_1bit"] > 0
        assert all(".resblocks." in t for t in rec["active_per_tensor"])   # only transformer blocks are masked
        assert len(rec["active_per_tensor"]) == 2 * 8                        # 2 blocks x (q/k/v, out, fc1, fc2) x (w, b)
    else:
        assert rec["n_trained"] > 0
