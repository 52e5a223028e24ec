"""`smn-sweep --executor slurm` on a real Slurm cluster: a mini slice with dependencies end to end (equal to the local
executor's records), submitted twice, cancelled, blocked, requeued mid-run, and refused. Needs a cluster:
`bash .ci/slurm-up` starts a throwaway one and prints the SLURM_CONF to export (`CI=true bash .ci/run` does both)."""

import json, os, re, shutil, signal, subprocess, sys, time
from contextlib import contextmanager
from pathlib import Path

import pytest


def _no_cluster() -> str | None:
    "Why there is no Slurm cluster to test on, or None when `sinfo` sees a usable node."
    if not os.environ.get("SLURM_CONF"):
        return "SLURM_CONF is unset"
    if not shutil.which("sinfo"):
        return "no Slurm client (sinfo) on PATH"
    try:
        r = subprocess.run(["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "sinfo timed out"
    if r.returncode or not re.search(r"idle|mix|alloc", r.stdout):
        return f"sinfo: {(r.stderr or r.stdout).strip() or 'no usable node'}"
    return None


if why := _no_cluster():
    pytest.skip(
        f"no Slurm cluster ({why}); to run these: bash .ci/slurm-up, then export the SLURM_CONF it prints",
        allow_module_level=True,
    )

SWEEP = [sys.executable, "-c", "from smn_nb.sweep import sweep_cli; sweep_cli()"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", SMN_NB_PROGRESS="lines")
SLURM = ("--executor", "slurm", "--partition", "debug", "--cpus", "1")


def sweep(*args, env=None):
    return subprocess.run(SWEEP + [str(a) for a in args], capture_output=True, text=True, env=env or ENV, timeout=600)


def run_id(table, epochs, **want):
    "The one run id of the mini grid (at `epochs`) serving `table` with `want` on digits, seed 0, the SwAV stand-in."
    from smn_nb.experiment import DEFAULTS
    from smn_nb.paper import paper_grid

    want = dict(dataset="digits", seed=0, model="resnet-fmnist-swav", **want)
    ids = [
        e.run_id
        for e in paper_grid("mini", overrides=dict(epochs=epochs))
        if table in e.tables and all(e.params.get(k, DEFAULTS[k]) == v for k, v in want.items())
    ]
    assert len(ids) == 1, (table, want, ids)
    return ids[0]


def record(root, rid):
    return json.loads((Path(root) / rid / "result.json").read_text())


def job_of(root, rid):
    return json.loads((Path(root) / rid / "slurm.json").read_text())["job_id"]


def wait_for(what, check, timeout):
    "Poll `check()` every 2 s until it returns something true; fail naming `what` and showing the queue."
    t0 = time.time()
    while time.time() - t0 < timeout:
        if out := check():
            return out
        time.sleep(2)
    q = subprocess.run(["squeue", "--states=all"], capture_output=True, text=True).stdout
    raise AssertionError(f"waited {timeout} s for {what}; squeue:\n{q}")


def status_line(args, state, rid):
    "The `--status` line of run `rid` if it is in `state` now."
    out = sweep(*args, "--status").stdout
    return next((l for l in out.splitlines() if l.startswith(f"{state} ") and f" {rid} " in f"{l} "), None)


def active(root, rids):
    "Those of `rids` whose Slurm job is still pending or running."
    q = subprocess.run(["squeue", "--noheader", "--array", "--format=%i"], capture_output=True, text=True, check=True)
    return [r for r in rids if job_of(root, r) in q.stdout.split()]


@contextmanager
def local_sweep(log, *args):
    "A local-executor sweep in the background (the uninterrupted reference), output to `log`; killed if still running."
    with open(log, "w") as f:
        cmd = SWEEP + [str(a) for a in args] + ["--executor", "local"]
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
        try:
            yield p
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)


def finished_in(p, log, what):
    "Wait for the background sweep `p`; assert it says `what` (e.g. '3 of 3 finished')."
    p.wait(timeout=600)
    out = Path(log).read_text()
    assert p.returncode == 0 and what in out, out[-3000:]


def with_logs(status: str, lines: int = 40) -> str:
    "`--status` output followed by the last `lines` of each failed run's job logs (stderr and stdout): what CI shows."
    out = [status]
    for err in re.findall(r"^failed .*\(log: (\S+)\)", status, re.M):
        for f in (Path(err), Path(err[: -len(".err")] + ".out")):
            tail = f.read_text(errors="replace").splitlines()[-lines:] if f.exists() else ["(no such file)"]
            out += [f"--- {f}", *tail]
    return "\n".join(out)


def same_records(a, b, rids):
    "Runs `rids` finished under both roots with the same id, metrics (float tolerance) and number of epochs."
    for rid in rids:
        ra, rb = record(a, rid), record(b, rid)
        assert ra["status"] == rb["status"] == "finished" and ra["run_id"] == rb["run_id"] == rid
        for k, v in ra["metrics"].items():
            w = rb["metrics"][k]
            assert (v is None) == (w is None), (rid, k, v, w)
            assert v is None or v == pytest.approx(w, rel=1e-5, abs=1e-6), (rid, k, v, w)
        assert len(ra["history"]) == len(rb["history"]), rid


def test_slice_cancelled_blocked_resubmitted_matches_local(tmp_path):
    "SMN -> (top-k at SMN's density, SMC): submitted twice, SMN cancelled (dependants blocked), swept again, as local."
    smn, smc = run_id("published/table2", 1, method="SMN"), run_id("published/table3", 1, method="SMC", cascade="cond")
    topk = run_id("published/table2", 1, method="topk", density="smn")
    rids, sl, log = [smn, topk, smc], tmp_path / "slurm", tmp_path / "local.log"
    args = ("--profile", "mini", "--runs", f"{topk},{smc}", "-p", "epochs", 1, "--runs-dir", sl)
    with local_sweep(log, *args[:-1], tmp_path / "local") as ref:
        dry = sweep(*args, *SLURM, "--dry-run").stdout
        asks = "slurm: each job asks for --cpus-per-task=1 --job-name=smn-sweep --ntasks-per-node=1 --partition=debug"
        assert dry.startswith(asks) and "--gres" not in dry.splitlines()[0], dry[:300]
        assert "runs per dependency level: [1, 2]" in dry, dry[:300]
        r = sweep(*args, *SLURM)
        assert r.returncode == 0 and "3 to run" in r.stdout and "submitted 3 jobs" in r.stdout, r.stdout + r.stderr
        again = sweep(*args, *SLURM)  # the same sweep while the first is in the queue
        assert "0 to run, 3 queued or running elsewhere" in again.stdout, again.stdout
        assert again.returncode == 0 and "nothing to submit" in again.stdout, again.stdout
        line = wait_for("SMN running", lambda: status_line(args, "running", smn), 120)
        assert re.search(rf"job {job_of(sl, smn)} on \S+ \(log: .+_log\.err\)$", line), line
        st = sweep(*args, "--status").stdout
        for rid in (topk, smc):
            assert re.search(rf"^pending +{rid} job \S+: Dependency$", st, re.M), st
        subprocess.run(["scancel", job_of(sl, smn)], check=True)
        line = wait_for("SMN cancelled", lambda: status_line(args, "cancelled", smn), 60)
        assert "CANCELLED AT" in line and "(log: " in line, line
        wait_for("the dependants to end", lambda: not active(sl, [topk, smc]), 180)
        st = sweep(*args, "--status").stdout
        for rid in (topk, smc):
            assert re.search(rf"^blocked +{rid} job \S+: prerequisite {smn} is cancelled$", st, re.M), st
        assert not (sl / smn / "result.json").exists() or record(sl, smn)["status"] != "finished"  # never done
        t0 = time.time()
        r = sweep(*args, *SLURM)  # picks all three up again
        assert r.returncode == 0 and "0 done (skipped), 3 to run" in r.stdout, r.stdout + r.stderr
        assert "submitted 3 jobs" in r.stdout, r.stdout
        wait_for("the slice to finish", lambda: not active(sl, rids), 600)
        print(f"slurm slice: {len(rids)} runs in {time.time() - t0:.0f} s")
        st = sweep(*args, "--status").stdout
        assert "no failed runs" in st, with_logs(st)
        assert not re.search(r"^(pending|running|failed|cancelled|blocked) ", st, re.M), with_logs(st)
        finished_in(ref, log, "3 of 3 finished")
    same_records(sl, tmp_path / "local", rids)


def test_requeue_resumes_from_checkpoint(tmp_path):
    "`scontrol requeue` of a running M run after its first checkpoint: it resumes, says so, ends as if uninterrupted."
    rid, sl, log = run_id("published/table1", 3, method="M"), tmp_path / "slurm", tmp_path / "local.log"
    args = ("--profile", "mini", "--runs", rid, "-p", "epochs", 3, "--runs-dir", sl)
    r = sweep(*args, *SLURM)
    assert r.returncode == 0 and "submitted 1 jobs" in r.stdout, r.stdout + r.stderr
    with local_sweep(log, *args[:-1], tmp_path / "local") as ref:
        wait_for("the first checkpoint", lambda: (sl / rid / "checkpoint.pt").exists(), 240)
        subprocess.run(["scontrol", "requeue", job_of(sl, rid)], check=True)
        line = wait_for("the requeued job pending", lambda: status_line(args, "pending", rid), 60)
        assert f"job {job_of(sl, rid)}" in line, line
        wait_for("the requeued run to finish", lambda: not active(sl, [rid]), 300)
        finished_in(ref, log, "1 of 1 finished")
    rec, loc = record(sl, rid), record(tmp_path / "local", rid)
    assert rec["status"] == "finished" and rec["resumed_from"] is not None and len(rec["history"]) == 3, rec
    assert loc["resumed_from"] is None
    same_records(sl, tmp_path / "local", [rid])
    for a, b in zip(rec["history"], loc["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5), (a, b)


REFUSED = "smn-sweep: sbatch refused: "


@pytest.mark.parametrize(
    "change, says",
    [
        (
            ("--partition", "nope"),
            REFUSED + "invalid partition specified: nope; Batch job submission failed: "
            "Invalid partition name specified — change --partition",
        ),
        (("--gpus", "1"), REFUSED + "Invalid generic resource (gres) specification — change --gpus"),
        (
            (),
            REFUSED + "Batch job submission failed: Unable to contact slurm controller (connect failure) — "
            "check SLURM_CONF",
        ),
    ],
)
def test_refusals_are_one_line(tmp_path, change, says):
    "A bad partition, a GPU the cluster lacks, an unreachable controller: one line naming what to change."
    args = (
        "--profile",
        "mini",
        "--tables",
        "published/table1",
        "--limit",
        1,
        "-p",
        "epochs",
        1,
        "--runs-dir",
        tmp_path,
    )
    env = None
    if not change:  # the cluster's config with a port nobody listens on, giving up after a second
        conf = Path(os.environ["SLURM_CONF"]).read_text()
        port = int(re.search(r"^SlurmctldPort=(\d+)", conf, re.M).group(1))
        conf = re.sub(r"^SlurmctldPort=\d+", f"SlurmctldPort={port + 77}", conf, flags=re.M)
        (tmp_path / "slurm.conf").write_text(conf + "\nMessageTimeout=2\n")
        env = dict(ENV, SLURM_CONF=str(tmp_path / "slurm.conf"))
    r = sweep(*args, *SLURM, *change, env=env)
    assert r.returncode == 1 and r.stderr.strip().startswith(says), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    if change == ("--partition", "nope"):  # --debug: the traceback, for a bug report
        d = sweep(*args, *SLURM, *change, "--debug")
        assert d.returncode == 1 and "Traceback" in d.stderr and "SlurmError" in d.stderr, d.stderr[-1000:]
