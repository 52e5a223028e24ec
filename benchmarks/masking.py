"""Masking benchmarks: step time and peak memory of mask training (M) vs full fine-tuning (FFT),
merged-model inference vs the base model, and mask storage vs the entropy bound.

    python benchmarks/masking.py            # full run (a few minutes on a 2-core CPU)
    python benchmarks/masking.py --quick    # fewer repetitions

Every ratio is measured in this one run, on whatever device is present (printed first).
Targets (SPEC.md): M/FFT step <= 1.25 on CPU (<= 1.10 on GPU); peak memory M/FFT <= 1.2;
merged/base inference 1.00 within noise; bits on disk / entropy <= 1.05.
"""
import argparse, bz2, gzip, json, lzma, math, os, statistics, subprocess, sys, time

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize
import timm

from smn_nb.masking import mask_model, score_parameters, merge, encode_mask, binary_entropy

DEV = "cuda" if torch.cuda.is_available() else "cpu"


class _NaiveMask(nn.Module):
    "Reference: compare, mean, sqrt, multiply as separate autograd ops (the straight-through trick)."
    def __init__(self, w):
        super().__init__(); self.score = nn.Parameter(torch.ones_like(w))
    def forward(self, w):
        m = (self.score > 0).to(w.dtype)
        m = m + self.score - self.score.detach()             # dM/dS = 1
        return w * m / m.mean().sqrt()


def build(method, res_classes=10):
    "timm resnet18 (random init) set up for `method` in {FFT, M, naive}; returns (model, optimiser)."
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=res_classes)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if method == "FFT":
        for p in model.parameters(): p.requires_grad_(False)
        for c in convs: c.weight.requires_grad_(True)
        params = [c.weight for c in convs]
        lr, wd = 1e-3, 5e-4
    elif method == "M":
        mask_model(model, "resnet")
        params, lr, wd = score_parameters(model), 50.0, 0.0
    elif method == "naive":
        for p in model.parameters(): p.requires_grad_(False)
        for c in convs:
            parametrize.register_parametrization(c, "weight", _NaiveMask(c.weight))
            c.parametrizations.weight.original.requires_grad_(False)
        params, lr, wd = [c.parametrizations.weight[0].score for c in convs], 50.0, 0.0
    else: raise ValueError(method)
    model.fc.weight.requires_grad_(True); model.fc.bias.requires_grad_(True)   # the new head trains in every method
    opt = torch.optim.SGD([{"params": params, "lr": lr, "weight_decay": wd},
                           {"params": model.fc.parameters(), "lr": 1e-3}], momentum=0.9)
    return model.to(DEV).train(), opt


def step_fn(model, opt, x, y):
    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def sync():
    if DEV == "cuda": torch.cuda.synchronize()


def time_interleaved(fns:dict, reps:int, inner:int=1):
    "Median seconds per call of each fn, timed in interleaved rounds so drift hits all alike."
    for f in fns.values(): f(); f()                           # warm-up
    ts = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            sync(); t0 = time.perf_counter()
            for _ in range(inner): f()
            sync(); ts[k].append((time.perf_counter() - t0) / inner)
    return {k: statistics.median(v) for k, v in ts.items()}


def bench_steps(size, batch, reps):
    x = torch.randn(batch, 3, size, size, device=DEV)
    y = torch.randint(0, 10, (batch,), device=DEV)
    fns = {m: step_fn(*build(m), x, y) for m in ("FFT", "M", "naive")}
    return time_interleaved(fns, reps)


def _rss():
    with open("/proc/self/statm") as f: return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_child(method, size, batch):
    "Run in a fresh process: peak memory that training steps add on top of the built model + optimiser."
    import threading
    x = torch.randn(batch, 3, size, size, device=DEV)
    y = torch.randint(0, 10, (batch,), device=DEV)
    model, opt = build(method)
    f = step_fn(model, opt, x, y)
    sync()
    if DEV == "cuda":
        torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
        for _ in range(3): f()
        sync(); peak = torch.cuda.max_memory_allocated()
    else:                                  # CPU: sample the resident set every millisecond
        base, peak, done = _rss(), [0], threading.Event()
        def sample():
            while not done.is_set(): peak[0] = max(peak[0], _rss()); time.sleep(0.001)
        th = threading.Thread(target=sample); th.start()
        for _ in range(3): f()
        done.set(); th.join(); peak = peak[0]
    print(json.dumps({"peak_added": peak - base}))


def bench_memory(size, batch):
    out = {}
    for m in ("FFT", "M", "naive"):
        r = subprocess.run([sys.executable, __file__, "--peak-child", m, str(size), str(batch)],
                           capture_output=True, text=True, check=True)
        out[m] = json.loads(r.stdout.strip().splitlines()[-1])["peak_added"]
    return out


def bench_merged(reps):
    torch.manual_seed(0)
    base = timm.create_model("resnet18", pretrained=False).to(DEV).eval()
    import copy
    masked = mask_model(copy.deepcopy(base), "resnet")
    with torch.no_grad():
        for s in score_parameters(masked): s.add_(torch.randn_like(s))
    merged = merge(masked).eval()
    x = torch.randn(32, 3, 224, 224, device=DEV)
    def inf(m):
        def f():
            with torch.inference_mode(): m(x)
        return f
    return time_interleaved({"base": inf(base), "merged": inf(merged)}, reps)


def make_mask(n, p_zero, structured, rng):
    "A flat mask with a fraction `p_zero` of zeros: i.i.d., or in blocks of 9 (3x3 kernels) and 64."
    if not structured: return rng.random(n) >= p_zero
    m = np.ones(n, bool)
    for blk, share in ((9, 0.5), (64, 0.5)):
        nb = int(n * p_zero * share / blk)
        starts = rng.choice(n // blk, size=nb, replace=False) * blk
        m[(starts[:, None] + np.arange(blk)).reshape(-1)] = False
    return m


def bench_storage(n):
    rng = np.random.default_rng(0)
    rows = []
    for structured in (False, True):
        for p_zero in (0.01, 0.05, 0.20, 0.50):
            m = make_mask(n, p_zero, structured, rng)
            packed = np.packbits(m).tobytes()
            h = binary_entropy(m.mean())
            t0 = time.perf_counter(); info, blob = encode_mask(m); t_enc = time.perf_counter() - t0
            sizes = {"ours": len(blob), "gzip": len(gzip.compress(packed, 9)), "bz2": len(bz2.compress(packed, 9)),
                     "lzma": len(lzma.compress(packed, preset=9 | lzma.PRESET_EXTREME)), "packed": len(packed)}
            bpw = {k: 8 * v / n for k, v in sizes.items()}
            rows.append(dict(zeros=f"{100 * (1 - m.mean()):.0f}%", kind="block" if structured else "random",
                             entropy=h, **{f"{k}_bpw": v for k, v in bpw.items()}, codec=info["codec"],
                             ours_over_H=bpw["ours"] / h, x_fp32=32 / bpw["ours"], bytes=sizes["ours"], enc_s=t_enc))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--peak-child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.peak_child:
        return _peak_child(a.peak_child[0], int(a.peak_child[1]), int(a.peak_child[2]))
    reps = 3 if a.quick else 7
    name = torch.cuda.get_device_name() if DEV == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {DEV} — {name}; torch {torch.__version__}, timm {timm.__version__}\n")

    target = 1.10 if DEV == "cuda" else 1.25
    print(f"## Step time, timm resnet18 (random init), mask training (M) vs full fine-tuning (FFT) — target M/FFT <= {target}")
    print(f"{'input':>12} {'FFT s/step':>11} {'M s/step':>10} {'naive s/step':>13} {'M/FFT':>7} {'naive/FFT':>10}")
    for size, batch in ((32, 64), (224, 32)):
        t = bench_steps(size, batch, reps if size == 32 else max(2, reps // 2))
        print(f"{f'{size}px b{batch}':>12} {t['FFT']:11.4f} {t['M']:10.4f} {t['naive']:13.4f} {t['M'] / t['FFT']:7.3f} {t['naive'] / t['FFT']:10.3f}")

    print("\n## Peak training memory added on top of the model, M vs FFT — target M/FFT <= 1.2")
    what = "torch.cuda.max_memory_allocated" if DEV == "cuda" else "peak resident set sampled every ms, fresh process per method"
    print(f"(measured as {what})")
    print(f"{'input':>12} {'FFT MB':>8} {'M MB':>8} {'naive MB':>9} {'M/FFT':>7} {'naive/FFT':>10}")
    for size, batch in ((32, 64), (224, 32)):
        mem = bench_memory(size, batch)
        print(f"{f'{size}px b{batch}':>12} {mem['FFT'] / 2**20:8.1f} {mem['M'] / 2**20:8.1f} {mem['naive'] / 2**20:9.1f} "
              f"{mem['M'] / mem['FFT']:7.3f} {mem['naive'] / mem['FFT']:10.3f}")

    print("\n## Merged model inference vs base model (resnet18, 224px, batch 32, eval) — target 1.00 within noise")
    t = bench_merged(reps)
    print(f"base {t['base']:.4f} s, merged {t['merged']:.4f} s, merged/base {t['merged'] / t['base']:.3f}")

    n = 2_000_000 if a.quick else 11_166_912     # resnet18's masked conv weights
    print(f"\n## Mask storage, {n:,} weights — bits per weight (bpw); target ours/entropy <= 1.05 for i.i.d. masks")
    print(f"{'zeros':>6} {'kind':>6} {'entropy':>8} {'ours':>7} {'codec':>6} {'ours/H':>7} {'x fp32':>7} "
          f"{'gzip':>7} {'bz2':>7} {'lzma':>7} {'packed':>7} {'enc s':>6}")
    for r in bench_storage(n):
        print(f"{r['zeros']:>6} {r['kind']:>6} {r['entropy']:8.4f} {r['ours_bpw']:7.4f} {r['codec']:>6} {r['ours_over_H']:7.3f} "
              f"{r['x_fp32']:7.1f} {r['gzip_bpw']:7.4f} {r['bz2_bpw']:7.4f} {r['lzma_bpw']:7.4f} {r['packed_bpw']:7.4f} {r['enc_s']:6.2f}")
    print("(block masks: order-0 entropy overstates their information, so ours/H < 1 is possible there)")


if __name__ == "__main__":
    main()
