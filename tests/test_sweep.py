"smn-sweep end to end, offline mini profile: a local slice, status, skips, a sweep killed halfway, the paper's dry run."

import json, os, signal, subprocess, sys, time
from pathlib import Path

from smn_nb.paper import paper_numbers, table_ids

SWEEP = [sys.executable, "-c", "from smn_nb.sweep import sweep_cli; sweep_cli()"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", SMN_NB_PROGRESS="lines")


def sweep(*args, **kw):
    return subprocess.run(SWEEP + list(args), capture_output=True, text=True, env=ENV, timeout=900, **kw)


def finished(root: Path) -> list[Path]:
    return sorted(f for f in root.glob("*/result.json") if json.loads(f.read_text()).get("status") == "finished")


def test_paper_dry_run_serves_every_table():
    r = sweep("--profile", "paper", "--dry-run")
    assert r.returncode == 0, r.stderr
    for t in table_ids():
        assert f"== {t}: " in r.stdout, t
    assert set(paper_numbers().id) | {"published/fig3", "seed-draft/fig1", "seed-draft/fig2"} <= set(table_ids())
    assert "total (each run once)" in r.stdout


def test_local_slice_status_and_skip(tmp_path):
    args = (
        "--profile",
        "mini",
        "--tables",
        "published/table1",
        "--limit",
        "3",
        "-p",
        "epochs",
        "1",
        "--runs-dir",
        str(tmp_path),
    )
    r = sweep(*args, "--executor", "local")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "3 of 3 finished" in r.stdout and len(finished(tmp_path)) == 3
    for f in finished(tmp_path):
        assert (f.parent / "run.ipynb").is_file()  # the executed notebook beside its record
    t0 = time.time()
    r = sweep(*args, "--executor", "local")
    assert r.returncode == 0 and "3 done (skipped), 0 to run" in r.stdout and time.time() - t0 < 30, r.stdout
    st = sweep(*args, "--status").stdout
    assert "published/table1" in st and "done" in st and "no failed runs" in st, st
    import papermill as pm  # the report renders the partial sweep

    out = tmp_path / "report"
    pm.execute_notebook(
        str(Path(__file__).parents[1] / "nbs" / "report.ipynb"),
        str(tmp_path / "report.ipynb"),
        progress_bar=False,
        parameters=dict(runs_dir=str(tmp_path), profile="mini", out_dir=str(out), overrides=dict(epochs=1)),
    )
    md = (out / "REPORT.md").read_text()
    assert md.startswith("# Report: profile `mini`") and "3 finished records" in md and "are missing" in md, md[:500]


def test_killed_sweep_finishes_on_rerun(tmp_path):
    args = [
        "--profile",
        "mini",
        "--tables",
        "published/table1",
        "--limit",
        "3",
        "-p",
        "epochs",
        "2",
        "--runs-dir",
        str(tmp_path),
        "--executor",
        "local",
    ]
    p = subprocess.Popen(
        SWEEP + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, start_new_session=True
    )
    deadline = time.time() + 600
    while not finished(tmp_path) and time.time() < deadline and p.poll() is None:
        time.sleep(0.5)
    assert p.poll() is None, "the sweep ended before it could be killed halfway"
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    first = finished(tmp_path)
    assert 1 <= len(first) < 3
    stamp = {f: f.stat().st_mtime_ns for f in first}
    time.sleep(2)  # a killed kernel notices its parent is gone and exits
    r = sweep(*args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert len(finished(tmp_path)) == 3 and f"{len(first)} done (skipped)" in r.stdout
    assert all(f.stat().st_mtime_ns == t for f, t in stamp.items())  # finished runs were not redone
