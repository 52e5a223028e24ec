"""Data-loading benchmark: is loading the bottleneck of a training step?

    python benchmarks/data.py            # about 2-3 minutes on a 2-core CPU
    python benchmarks/data.py --quick    # fewer batches

Measured on whatever device is present (printed first), in one run:
  * loader img/s: the training input pipeline alone (uint8 store -> fast batch loader -> device ->
    BatchAugment random-resized-crop + flip + normalise), and for comparison the per-sample
    torchvision-v2 path (train_transform in the DataLoader);
  * model img/s: the backbone's bare forward+backward+SGD step on a pre-loaded device batch;
  * full step img/s: the same step with loading and augmentation included.
Cases: Fashion-MNIST (or digits) at 32 px with a small resnet (resnet10t) and resnet18, and a
224-px case with synthetic images through the same store path with resnet18 (all timm, random init).
SPEC target: training img/s / bare fwd+bwd img/s >= 0.9.  (loader / model >= 1 means loading can keep up.)
"""
import argparse, os, sys, tempfile, time
from pathlib import Path

import torch
from torch import nn
import timm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from smn_nb.data import (BatchAugment, ImageDataset, TensorStore, get_dataset, make_loader, train_transform,
                         IMAGENET_MEAN, IMAGENET_STD)

DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync():
    if DEV.type == "cuda": torch.cuda.synchronize()


def med(v): v = sorted(v); return v[len(v) // 2]


def loader_times(loader, aug, n_batches, warm=2):
    "Seconds per batch of iterating `loader` (moved to the device and augmented there when `aug` is given)."
    it, ts = iter(loader), []
    for i in range(warm + n_batches):
        sync(); t0 = time.perf_counter()
        try: x, y = next(it)
        except StopIteration: it = iter(loader); x, y = next(it)
        x = x.to(DEV, non_blocking=True); y = y.to(DEV, non_blocking=True)
        if aug is not None: x = aug(x)
        sync(); ts.append(time.perf_counter() - t0)
    return ts[warm:]


def make_model(name, n_classes=10):
    torch.manual_seed(0)
    m = timm.create_model(name, pretrained=False, num_classes=n_classes).to(DEV).train()
    return m, torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)


def step(model, opt, x, y):
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()


def step_times(model, opt, loader, aug, xb, yb, n_steps, warm=2):
    """Seconds per step, interleaved: a bare fwd+bwd+step on the pre-loaded device batch `xb, yb`, then a full
    step that first loads, transfers and augments its batch. Interleaving (and medians) keep bursts of
    load from other processes on a shared machine from biasing one side."""
    it, bare, full = iter(loader), [], []
    for i in range(warm + n_steps):
        sync(); t0 = time.perf_counter()
        step(model, opt, xb, yb)
        sync(); t1 = time.perf_counter()
        try: x, y = next(it)
        except StopIteration: it = iter(loader); x, y = next(it)
        x = x.to(DEV, non_blocking=True); y = y.to(DEV, non_blocking=True)
        if aug is not None: x = aug(x)
        step(model, opt, x, y)
        sync(); t2 = time.perf_counter()
        if i >= warm: bare.append(t1 - t0); full.append(t2 - t1)
    return bare, full


def case(title, store, size, mean, std, arch, bs, n_load, n_model, per_sample_ds=None, n_ps=0):
    "Rates from median per-batch times."
    print(f"\n== {title}: {arch} at {size}px, batch {bs} ==")
    aug = BatchAugment(size, mean, std).to(DEV)
    dl = make_loader(store, None, bs, shuffle=True, seed=0, drop_last=True, num_workers=0)
    L = bs / med(loader_times(dl, aug, n_load))
    print(f"loader (store -> fast loader -> {DEV.type} BatchAugment): {L:10.1f} img/s")
    if per_sample_ds is not None and n_ps:
        ps = make_loader(per_sample_ds, train_transform(size, mean, std), bs, shuffle=True, seed=0, drop_last=True)
        P = bs / med(loader_times(ps, None, n_ps, warm=1))
        print(f"loader (per-sample v2 train_transform, 0 workers):  {P:10.1f} img/s")
    model, opt = make_model(arch, len(store.classes))
    xb, yb = next(iter(dl)); xb, yb = aug(xb.to(DEV)), yb.to(DEV)
    bare, full = step_times(model, opt, dl, aug, xb, yb, n_model)
    M, T = bs / med(bare), bs / med(full)
    print(f"model bare fwd+bwd+step (pre-loaded batch):        {M:10.1f} img/s")
    print(f"full train step incl. loading + augmentation:     {T:10.1f} img/s")
    print(f"ratio loader / model fwd+bwd:  {L / M:8.2f}   (>= 1: loading keeps up)")
    print(f"ratio full step / bare step:   {T / M:8.2f}   (SPEC target >= 0.9)")
    return dict(loader=L, model=M, full=T)


def main():
    ap = argparse.ArgumentParser(); ap.add_argument("--quick", action="store_true"); a = ap.parse_args()
    q = 0.5 if a.quick else 1.0
    torch.manual_seed(0)
    print(f"device: {DEV}" + (f" ({torch.cuda.get_device_name()})" if DEV.type == "cuda" else
                              f" (CPU, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores)"))
    print(f"torch {torch.__version__}, timm {timm.__version__}")
    tmp = Path(tempfile.mkdtemp(prefix="smn_bench_"))

    # 32 px: Fashion-MNIST (digits if it is absent)
    try: ds = get_dataset("fashion_mnist", "train")
    except FileNotFoundError: ds = get_dataset("digits", "train")
    t0 = time.perf_counter(); store = TensorStore(ds, 32, root=tmp, progress=False)
    print(f"\n{ds}\nTensorStore at 32 px built in {time.perf_counter() - t0:.2f}s -> {store.path.name}")
    t0 = time.perf_counter(); TensorStore(ds, 32, root=tmp, progress=False)
    print(f"TensorStore reopened (memory map) in {time.perf_counter() - t0:.3f}s")
    mean, std = (0.5,) * 3, (0.5,) * 3
    store.images.sum()   # page the memory map in once (an epoch would)
    case(f"{ds.name} 32px", store, 32, mean, std, "resnet10t", 256, int(30 * q), int(9 * q), ds, int(5 * q))
    case(f"{ds.name} 32px", store, 32, mean, std, "resnet18", 256, int(30 * q), int(9 * q))

    # 224 px: synthetic images of a realistic size through the same store path (stored at 256 = 224/0.875)
    n = int(384 * q)
    g = torch.Generator().manual_seed(0)
    syn = ImageDataset.from_tensors(torch.randint(0, 256, (n, 3, 300, 400), dtype=torch.uint8, generator=g),
                                    torch.arange(n) % 10, name="synthetic", split="train")
    t0 = time.perf_counter(); store224 = TensorStore(syn, 256, root=tmp, progress=False)
    print(f"\n{syn}\nTensorStore at 256 px built in {time.perf_counter() - t0:.2f}s")
    case("synthetic 224px", store224, 224, IMAGENET_MEAN, IMAGENET_STD, "resnet18", 32, int(12 * q), max(4, int(8 * q)), syn, 3)


if __name__ == "__main__":
    main()
