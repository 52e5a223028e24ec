"""The pip package runs outside the repository: a wheel built from this checkout and installed into a
scratch folder finds its shipped files (run.ipynb, the offline backbone) inside the installed package and runs an
experiment with them through `smn-run`'s entry point."""

import os, subprocess, sys, textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter, outside the repository, with only the installed wheel on PYTHONPATH.
CHECK = textwrap.dedent("""
    import sys, torch
    from pathlib import Path
    import smn_nb
    from smn_nb.backbones import get_backbone, shipped_file
    site, repo = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    mod = Path(smn_nb.__file__)
    assert mod.resolve().is_relative_to(site), f"smn_nb imported from {mod}, not from {site}"
    shipped_files = [("run.ipynb", "nbs"), ("resnet_fmnist.pt", "data"), ("resnet_fmnist.json", "data")]
    shipped_files += [("resnet_fmnist_swav.pt", "data"), ("resnet_fmnist_swav.json", "data")]
    for name, src in shipped_files:
        f = shipped_file(name)
        assert f.is_relative_to(site / "smn_nb" / "assets"), f"{name} found at {f}, not in the installed package"
        assert f.read_bytes() == (repo / src / name).read_bytes(), f"{f} differs from {repo / src / name}"
    shipped = get_backbone("resnet-fmnist").state_dict()                                # the lookup, as a user runs it
    ref = get_backbone("resnet-fmnist", weights=repo / "data" / "resnet_fmnist.pt").state_dict()
    assert shipped.keys() == ref.keys() and all(torch.equal(shipped[k], ref[k]) for k in ref)
    init = get_backbone("resnet-fmnist", pretrained=False).state_dict()
    assert not torch.equal(shipped["net.conv1.weight"], init["net.conv1.weight"])       # pretrained, not an init
    swav = get_backbone("resnet-fmnist-swav").state_dict()                             # the SwAV stand-in, likewise
    ref = get_backbone("resnet-fmnist-swav", weights=repo / "data" / "resnet_fmnist_swav.pt").state_dict()
    assert all(torch.equal(swav[k], ref[k]) for k in ref)
    assert not torch.equal(swav["net.conv1.weight"], shipped["net.conv1.weight"])        # not resnet-fmnist's weights
    # an experiment through the shipped run notebook, as `smn-run -p method knn` runs it, into a runs folder here
    import json
    from smn_nb.experiment import run_cli
    run_cli(["-p", "method", "knn", "-p", "runs_dir", "runs", "-p", "device", "cpu"])
    (rec,) = [json.loads(f.read_text()) for f in Path("runs").glob("*/result.json")]
    assert rec["status"] == "finished" and rec["metrics"]["knn_acc"] > 0.5, rec["metrics"]
    assert (Path("runs") / rec["run_id"] / "run.ipynb").is_file()             # the executed notebook beside its record
    print("ok", shipped_file("run.ipynb"))
""")


def _run(*cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert r.returncode == 0, (
        f"{' '.join(map(str, cmd[:5]))} ... failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    )
    return r.stdout


def test_wheel_runs_outside_the_repo(tmp_path):
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp_path),
        str(ROOT),
        cwd=ROOT,
    )
    (wheel,) = tmp_path.glob("smn_nb-*.whl")
    site = tmp_path / "site"
    _run(sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target", str(site), str(wheel))
    env = {k: v for k, v in os.environ.items() if k not in ("SMN_NB_WEIGHTS", "PYTHONPATH")} | {"PYTHONPATH": str(site)}
    out = _run(sys.executable, "-c", CHECK, str(site), str(ROOT), cwd=tmp_path, env=env)
    assert out.splitlines()[-1].startswith("ok " + str(site.resolve())), out
