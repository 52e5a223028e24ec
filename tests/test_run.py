"nbs/run.ipynb and nbs/demo.ipynb through papermill, as a user runs them; and the trust guarantees of a run."

import json, pickle, subprocess, sys
from dataclasses import replace
from pathlib import Path
from unittest import mock

import papermill as pm
import pytest
from filelock import FileLock

from smn_nb import experiment as E, runners as R, spec as S
from smn_nb.protocol import HParams

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "nbs" / "run.ipynb"
CHANCE = 0.1  # digits: 10 balanced classes
RECORD_KEYS = {
    "run_id",
    "status",
    "params",
    "hparams",
    "metrics",
    "history",
    "seconds",
    "device",
    "env",
    "n_train_labelled",
    "warnings",
}


def run(tmp_path, **params):
    runs = tmp_path / "runs"
    pm.execute_notebook(
        str(NB),
        str(tmp_path / "out.ipynb"),
        cwd=str(tmp_path),
        progress_bar=False,
        parameters=dict(runs_dir=str(runs), device="cpu", **params),
    )
    recs = [json.loads(f.read_text()) for f in runs.glob("*/result.json")]
    (rec,) = [r for r in recs if r["params"]["method"] == params.get("method", "M") and r["status"] == "finished"]
    return rec, runs / rec["run_id"]


@pytest.mark.parametrize("method", ["knn", "lp", "M", "FFT", "SMN", "STN", "topk"])
def test_each_method_writes_a_finished_record(tmp_path, method):
    rec, folder = run(tmp_path, method=method, epochs=1)
    assert RECORD_KEYS <= set(rec), RECORD_KEYS - set(rec)
    assert rec["status"] == "finished" and rec["params"]["method"] == method and rec["params"]["dataset"] == "digits"
    assert rec["env"]["torch"] and rec["env"]["threads"] >= 1 and "cpu" in rec["env"]  # what moves a run's last bits
    assert rec["metrics"]["test_acc"] > 2 * CHANCE, rec["metrics"]  # one epoch on digits: well above chance
    assert not list(folder.glob("checkpoint*")) and not list(folder.glob(".*.tmp"))
    if method == "M":
        assert (folder / "mask.smn").exists() and rec["mask_file_bytes"] == (folder / "mask.smn").stat().st_size
        assert (
            0 < rec["active_frac"] <= 1 and rec["adaptation_bits_1bit"] == rec["n_masked"] and len(rec["history"]) == 1
        )
    if method in ("SMN", "topk"):
        assert (folder / "mask.smn").exists() and 0 < rec["active_frac"] <= 1
    if method == "topk":
        assert abs(rec["active_frac"] - 0.5) < 0.01 and rec["density"] == 0.5
    if method in ("SMN", "STN", "topk"):
        assert {"knn_acc", "lp_acc"} <= set(rec["metrics"]) and len(rec["history"]) == 1
    if method in ("knn", "lp"):
        assert rec["history"] == [] and {"knn_acc", "lp_acc"} <= set(rec["metrics"])
        assert len(list((folder.parent / "_embeddings").glob("*.pt"))) == 3  # train/val/test embeddings cached


def test_mask_file_rebuilds_the_adapted_network(tmp_path):
    import torch
    from smn_nb import backbones as B
    from smn_nb.masking import load_masks
    from smn_nb.train import Classifier, accuracy

    rec, folder = run(tmp_path, method="M", epochs=1)
    bb = B.get_backbone(rec["params"]["model"])
    info = load_masks(bb, folder / "mask.smn", backbone=rec["params"]["model"])
    head = torch.nn.Linear(bb.spec.embed_dim, len(info["extra"]["head"]["bias"]))
    head.load_state_dict(info["extra"]["head"])
    L = R.run_loaders(S.validate_params(**rec["params"]), HParams.from_dict(rec["hparams"]), bb.spec, "cpu")
    assert accuracy(Classifier(bb, head), L["test"]) == pytest.approx(rec["metrics"]["test_acc"], abs=1e-9)


def test_rerun_skips_and_bad_parameters_fail_clearly(tmp_path):
    rec, _ = run(tmp_path, method="lp", epochs=1)
    rec2, _ = run(tmp_path, method="lp", epochs=1)
    assert rec2["seconds"] == rec["seconds"]  # the finished record was reused
    with pytest.raises(pm.PapermillExecutionError, match="is not one of"):
        run(tmp_path, method="LoRA")
    with pytest.raises(pm.PapermillExecutionError, match="did you mean 'dataset'.*valid parameters: dataset, model"):
        run(tmp_path, method="lp", datset="dtd")  # a misspelled -p name is an error, not a warning
    with pytest.raises(pm.PapermillExecutionError, match="applies to method topk only"):
        run(tmp_path, method="lp", density=0.3)


def test_help_notebook_lists_every_parameter():
    out = subprocess.run(
        [sys.executable, "-m", "papermill", "--help-notebook", str(NB)], capture_output=True, text=True, check=True
    )
    text = out.stdout + out.stderr
    assert "Unable to parse" not in text
    for q in E.PARAMS:
        assert f"  {q.name}: {q.type} (default {q.default!r})" in text, q.name


def test_topk_at_the_density_smn_found(tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="run it first"):
        run(tmp_path, method="topk", density="smn", epochs=1)  # leaves a failed record: never a result
    assert [json.loads(f.read_text())["status"] for f in (tmp_path / "runs").glob("*/result.json")] == ["failed"]
    smn, _ = run(tmp_path, method="SMN", epochs=1, lr=500.0)  # a high lr so the mask really moves in one epoch
    topk, _ = run(tmp_path, method="topk", density="smn", epochs=1, lr=500.0)
    assert topk["density"] == smn["active_frac"] < 1.0
    assert abs(topk["active_frac"] - smn["active_frac"]) < 1e-3


@pytest.mark.parametrize("method", ["M", "FFT"])
def test_clip_path_with_zero_shot_head(tmp_path, method):
    "CLIP's route (zero-shot text head, attention/MLP masks) on a tiny random open_clip config, offline."
    from smn_nb.backbones import get_backbone
    from smn_nb.masking import select_targets

    rec, folder = run(tmp_path, model="clip-tiny", method=method, epochs=1)
    assert rec["params"]["model"] == "clip-tiny" and rec["hparams"]["head"] == "zero-shot"
    bb = get_backbone("clip-tiny", pretrained=False)
    targets = select_targets(bb, "clip-vit")
    n_targets = sum(bb.get_submodule(m).get_parameter(p).numel() for m, p in targets)
    if method == "M":
        assert rec["n_masked"] == rec["adaptation_bits_1bit"] == n_targets
        assert all(".resblocks." in t for t in rec["active_per_tensor"])  # only transformer blocks are masked
        assert len(rec["active_per_tensor"]) == 2 * 8  # 2 blocks x (q/k/v, out, fc1, fc2) x (w, b)
    else:
        assert rec["n_trained"] == n_targets and rec["adaptation_bits"] == 32 * n_targets  # the same tensors, trained


def test_a_run_gone_nan_is_never_recorded_finished(tmp_path):
    real = S.resolve_hparams  # lr=nan is refused by the checks, so break the run inside
    with mock.patch.object(
        S, "resolve_hparams", lambda *a, **k: replace(h := real(*a, **k), optim=replace(h.optim, lr=float("nan")))
    ):
        with pytest.raises(FloatingPointError):
            E.run_experiment(method="M", epochs=1, runs_dir=str(tmp_path), device="cpu")
    (rec,) = [json.loads(f.read_text()) for f in tmp_path.glob("*/result.json")]
    assert rec["status"] == "failed" and "FloatingPointError" in rec["error"]
    assert E.load_results(tmp_path).empty and E.finished_record(tmp_path / rec["run_id"]) is None


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_planted_checkpoint_runs_no_code(tmp_path):
    p, hp = E.plan(method="M", epochs=1, runs_dir=str(tmp_path), device="cpu")
    folder = tmp_path / E.run_id(p, hp)
    folder.mkdir()
    marker, control = tmp_path / "pwned", tmp_path / "control"
    planted = pickle.dumps({"model": _Payload(marker)})
    pickle.loads(pickle.dumps({"model": _Payload(control)}))  # the payload is real: plain unpickling runs it
    assert control.exists()
    (folder / "checkpoint.pt").write_bytes(planted)
    rec = E.run_experiment(method="M", epochs=1, runs_dir=str(tmp_path), device="cpu")  # restarts from scratch
    assert not marker.exists() and rec["status"] == "finished" and rec["resumed_from"] is None


def test_an_interrupted_run_resumes_and_counts_all_its_time(tmp_path):
    real_fit = R.fit

    def fit_then_stop(*a, **k):  # Ctrl-C right after the first epoch's checkpoint
        k["on_epoch_end"] = lambda epoch, history: (_ for _ in ()).throw(KeyboardInterrupt())
        return real_fit(*a, **k)

    with mock.patch.object(R, "fit", fit_then_stop), pytest.raises(KeyboardInterrupt):
        E.run_experiment(method="M", epochs=2, runs_dir=str(tmp_path), device="cpu")
    rec = E.run_experiment(method="M", epochs=2, runs_dir=str(tmp_path), device="cpu")
    assert rec["resumed_from"] == 0 and len(rec["history"]) == 2
    assert rec["seconds"] >= rec["history"][0]["seconds"] + rec["history"][1]["seconds"]
    assert "resumed after epoch 0" in E.summary(rec)


def test_one_run_at_a_time_and_an_unwritable_runs_dir_fails_before_training(tmp_path):
    p, hp = E.plan(method="lp", runs_dir=str(tmp_path))
    folder = tmp_path / E.run_id(p, hp)
    folder.mkdir()
    with FileLock(folder / ".lock"):  # another process doing this run
        with pytest.raises(E.RunInProgress, match="in progress in another process"):
            E.run_experiment(method="lp", runs_dir=str(tmp_path))
    (tmp_path / "a_file").write_text("")
    with mock.patch.object(E, "execute_run", side_effect=AssertionError("trained anyway")):
        with pytest.raises(OSError, match="writable folder"):
            E.run_experiment(method="M", runs_dir=str(tmp_path / "a_file" / "runs"))


def test_demo_notebook_compares_methods(tmp_path):
    demo = ROOT / "nbs" / "demo.ipynb"
    nb = pm.execute_notebook(
        str(demo),
        str(tmp_path / "demo.ipynb"),
        cwd=str(tmp_path),
        progress_bar=False,
        parameters=dict(seeds=[0, 1], epochs=1, device="cpu", runs_dir=str(tmp_path / "runs")),
    )
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    for line in ("frozen + kNN", "frozen + linear probe", "M + its own head", "M + kNN", "M + linear probe"):
        assert line in text
    assert "M stores" in text and len(E.load_results(tmp_path / "runs")) == 4


def test_authors_topk_lowers_the_kept_fraction_linearly(tmp_path):
    from smn_nb.experiment import run_experiment

    rec = run_experiment(
        method="topk", density=0.5, epochs=3, runs_dir=str(tmp_path), device="cpu", protocol="authors", batch_size=256
    )
    assert (rec["hparams"]["topk_init"], rec["hparams"]["topk_density"]) == ("kaiming", "linear")
    assert [round(h["active_frac"], 3) for h in rec["history"]] == [
        1.0,
        0.75,
        0.5,
    ]  # 1 + (d - 1) e / (E - 1), per epoch
    paper = run_experiment(method="topk", density=0.5, epochs=1, runs_dir=str(tmp_path), device="cpu", batch_size=256)
    assert round(paper["history"][0]["active_frac"], 3) == 0.5  # the paper's: the target from the start


def test_other_weights_under_a_pinned_name_are_a_run_of_their_own(tmp_path, capsys):
    "A random checkpoint passed for `resnet-fmnist` must not be filed under, nor answer for, the pinned backbone."
    import torch
    from smn_nb.backbones import fmnist_resnet, shipped_file

    rnd = tmp_path / "random.pt"
    torch.manual_seed(0)
    torch.save(fmnist_resnet().state_dict(), rnd)
    runs = str(tmp_path / "runs")
    random_rec = E.run_experiment(method="knn", weights=str(rnd), runs_dir=runs, device="cpu")
    assert "a run of its own" in capsys.readouterr().out
    pinned = E.run_experiment(method="knn", runs_dir=runs, device="cpu")
    assert pinned["run_id"] != random_rec["run_id"]
    assert pinned["metrics"]["knn_acc"] > random_rec["metrics"]["knn_acc"] + 0.05  # measured: 0.81 against 0.47
    again = E.run_experiment(method="knn", weights=str(shipped_file("resnet_fmnist.pt")), runs_dir=runs, device="cpu")
    assert (again["run_id"], again["seconds"]) == (
        pinned["run_id"],
        pinned["seconds"],
    )  # the pinned file by path: reused
    assert sorted(f.parent.name for f in (tmp_path / "runs").glob("*/result.json")) == sorted(
        [pinned["run_id"], random_rec["run_id"]]
    )


def test_smn_run_prints_no_kernel_chatter(tmp_path):
    "A run's output is its folder, its epochs and its summary: no Jupyter kernel warning (the kernel talks over IPC)."
    cmd = [
        sys.executable,
        "-c",
        "from smn_nb.experiment import run_cli; run_cli()",
        "-p",
        "method",
        "knn",
        "-p",
        "device",
        "cpu",
        "-p",
        "runs_dir",
        str(tmp_path),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=tmp_path)
    text = out.stdout + out.stderr
    assert "TCP without encryption" not in text and "IPKernelApp" not in text, text
    lines = [l for l in text.splitlines() if l.strip()]
    assert lines[0].endswith("run.ipynb") and "knn_acc=" in lines[-1], text


def test_controls_bn_and_random_through_papermill_and_smn_run(tmp_path):
    "`bn` and `random` run like every method; `random` without its SMN run is an error naming that run."
    smn_run = [sys.executable, "-c", "from smn_nb.experiment import run_cli; run_cli()"]
    args = [
        "-p",
        "method",
        "random",
        "-p",
        "device",
        "cpu",
        "-p",
        "epochs",
        "1",
        "-p",
        "runs_dir",
        str(tmp_path / "runs"),
    ]
    out = subprocess.run(smn_run + args, capture_output=True, text=True, cwd=tmp_path)
    smn_id = S.run_id(*S.plan(method="SMN", epochs=1))
    assert out.returncode != 0 and smn_id in out.stdout + out.stderr and "-p method SMN" in out.stdout + out.stderr
    smn, _ = run(tmp_path, method="SMN", epochs=1, lr=500.0)  # a high lr so the mask really moves in one epoch
    rnd, folder = run(tmp_path, method="random", epochs=1, lr=500.0)
    assert rnd["source_run"] == smn["run_id"] and (folder / "mask.smn").exists()
    assert abs(rnd["active_frac"] - smn["active_frac"]) < 1e-3 < 1 - smn["active_frac"]  # SMN's density, not 1
    for k, a in smn["active_per_tensor"].items():
        assert abs(rnd["active_per_tensor"][k] - a) < 1e-3, k  # tensor by tensor
    bn, _ = run(tmp_path, method="bn")
    frozen, _ = run(tmp_path, method="lp")
    assert bn["history"] == [] and bn["active_frac"] is None and bn["adaptation_bits"] > 0
    assert bn["metrics"]["knn_acc"] != frozen["metrics"]["knn_acc"]  # the statistics moved the embeddings
    for r in (rnd, bn):
        assert RECORD_KEYS <= set(r) and r["metrics"]["lp_acc"] > 2 * CHANCE, r["metrics"]
