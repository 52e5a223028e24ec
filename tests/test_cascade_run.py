"A self-masking cascade through the front door: SMN, then SMC cond and uncond through papermill on the offline default."

import json, os, subprocess, sys
from pathlib import Path

ENV = dict(os.environ, OMP_NUM_THREADS="1", SMN_NB_PROGRESS="lines")


def smn_run(runs, *params):
    args = [a for k, v in params for a in ("-p", k, str(v))]
    r = subprocess.run(
        [sys.executable, "-c", "from smn_nb.experiment import run_cli; run_cli()", *args, "-p", "runs_dir", str(runs)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=1200,
    )
    return r


def records(runs: Path, method: str) -> list[dict]:
    out = [json.loads(f.read_text()) for f in runs.glob("*/result.json")]
    return [r for r in out if r["params"]["method"] == method and r["status"] == "finished"]


def test_smc_needs_its_dispatcher_then_runs_cond_and_uncond(tmp_path):
    r = smn_run(tmp_path, ("method", "SMC"), ("cascade", "cond"), ("experts", 3), ("epochs", 1))
    assert (
        r.returncode != 0
        and "needs the finished record of the matching run digits_resnet-fmnist_SMN" in r.stderr + r.stdout
    )
    assert smn_run(tmp_path, ("method", "SMN"), ("epochs", 1)).returncode == 0
    for kind in ("cond", "uncond"):
        r = smn_run(tmp_path, ("method", "SMC"), ("cascade", kind), ("experts", 3), ("epochs", 1))
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    smn, smc = records(tmp_path, "SMN")[0], {r["params"]["cascade"]: r for r in records(tmp_path, "SMC")}
    experts = sorted(tmp_path.glob("*_experts3_*/expert*/result.json"))
    assert len(experts) == 3  # trained once, shared by cond and uncond
    for kind, rec in smc.items():
        assert 0 < rec["metrics"]["knn_acc"] <= 1 and 0 < rec["metrics"]["lp_acc"] <= 1
        assert rec["members"][0] == smn["run_id"] and len(rec["members"]) == 4
        assert rec["forward_passes"] == (2 if kind == "cond" else 4)
        files = [tmp_path / smn["run_id"] / "mask.smn"] + [e.parent / "mask.smn" for e in experts]
        assert rec["adaptation_bits"] == 8 * sum(f.stat().st_size for f in files)
        assert rec["size_beta_1bit"] == 4 / 32 and 0 < rec["size_beta"] < 4 / 32
        print(kind, {k: rec["metrics"][k] for k in ("knn_acc", "lp_acc")}, rec["size_beta"], rec["forward_passes"])
    print("SMN", {k: smn["metrics"][k] for k in ("knn_acc", "lp_acc")})
