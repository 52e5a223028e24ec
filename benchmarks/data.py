"""Input-pipeline benchmark: does the path runs take keep the model fed?

    python benchmarks/data.py                      # 2,000 JPEGs, ResNet-18 and -50 at 224 px: ~5 min on a 2-core CPU
    python benchmarks/data.py --quick              # 200 JPEGs, ResNet-18 at 224 px: ~1 min
    python benchmarks/data.py --quick --json d.json
    python benchmarks/data.py --smoke              # 48 small JPEGs at 32 px, a toy ResNet: seconds, checks it runs (CI)

It writes a folder of photo-sized JPEG files (500x375 and 375x500, dtd's shape), then measures, in one run and on
whatever device is present, exactly what a run does with them (`smn_nb.store`, `smn_nb.train.fit`):
  * first epoch: decode every JPEG once into the uint8 store (`TensorStore`: each image whole, 256 px on its shorter
    side for 224, padded to the longest), then train on it;
  * steady epochs: `fit` over the store's batches with the augmentation on the device — random resized crop + flip
    for supervised runs (method M), SwAV's multi-crop (2 x 224 + 6 x 96) for self-supervised ones (SMN);
and prints, per path and model:
  * loader img/s: store -> batch -> device -> augmentation, alone (first epoch: decoding into the store);
    gather img/s: the CPU's part of it on a GPU machine (store -> batch of 64, one process), beside what an H100
    consumes (below);
  * bare img/s: `fit`'s steps on one pre-made device batch (no loading, no augmentation);
  * full img/s: `fit`'s steps as a run takes them; full / bare, target >= 0.9.
Bare and full steps alternate within one `fit` epoch (a pre-made batch, then a batch from the store, ...) and are
summarised by medians, so load from other processes on a shared machine biases neither. The first epoch's full rate
is the store's build time plus the epoch's steps at the steady full rate (that is what a run's first epoch is).
"""

import argparse, json, os, shutil, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch
from torch import nn
import timm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from smn_nb.datasets import ImageDataset
from smn_nb.store import (
    TensorStore,
    batch_to,
    default_workers,
    make_loader,
    selfsup_train_loader,
    supervised_train_loader,
)
from smn_nb.augment import IMAGENET_MEAN, IMAGENET_STD, train_transform
from smn_nb.selfsup import SwAVObjective, prepare_selfsup
from smn_nb.train import Classifier, fit, prepare_model, supervised_loss

DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# What one H100 consumes, in source images/s, training at 224 px in bf16 + channels-last. An estimate, not measured
# here: timm's maintainer reports ResNet-50 training at 2,600 img/s on an A100 (AMP, channels-last, timm's
# benchmark.py; github.com/huggingface/pytorch-image-models/issues/1491); we take an H100 as 1.5x an A100 and
# ResNet-18 as 2.3x ResNet-50 (forward GFLOPs 1.8 vs 4.1). A self-supervised image is 2 crops at 224 px and 6 at
# 96 px, 2 + 6 x (96/224)^2 = 3.1 crops' worth of compute, so an H100 consumes 3.1x fewer of them.
H100_IMG_S = {"supervised": {"resnet18": 9000, "resnet50": 3900}, "selfsup": {"resnet18": 2900, "resnet50": 1260}}


def sync():
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def write_jpegs(folder: Path, n: int, seed: int = 0, long: int = 500) -> ImageDataset:
    "`n` photo-like JPEGs (colour fields, texture, grain; quality 90), `long` by 3/4 of `long` either way, ten classes."
    from torchvision.io import encode_jpeg

    g = torch.Generator().manual_seed(seed)
    up = lambda t, hw: nn.functional.interpolate(t, size=hw, mode="bicubic", align_corners=False)
    for i in range(n):
        hw = (long * 3 // 4, long) if i % 3 else (long, long * 3 // 4)
        img = up(torch.rand(1, 3, 6, 8, generator=g), hw) + 0.15 * up(torch.rand(1, 3, 60, 80, generator=g), hw)
        img = img + 0.03 * torch.randn(1, 3, *hw, generator=g)
        (folder / f"{i:05d}.jpg").write_bytes(
            encode_jpeg((img[0].clamp(0, 1.15) / 1.15 * 255).to(torch.uint8), quality=90).numpy().tobytes()
        )
    return ImageDataset.from_files(
        sorted(folder.glob("*.jpg")), [i % 10 for i in range(n)], name="photos", split="train"
    )


class Alternate:
    "Batches alternating between one pre-made device batch (a bare step's input) and `loader`'s next uint8 batch."

    def __init__(self, loader, bare_batch, n: int):
        self.loader, self.bare, self.n = loader, bare_batch, n

    def __len__(self):
        return self.n

    @property
    def generator(self):
        return getattr(self.loader, "generator", None)

    def __iter__(self):
        it = iter(self.loader)
        for i in range(self.n):
            if i % 2 == 0:
                yield self.bare
            else:
                try:
                    yield next(it)
                except StopIteration:
                    it = iter(self.loader)
                    yield next(it)


def raw_only(augment):
    "`augment` for store batches `[uint8 images, sizes]`; a pre-made batch (float, or float crops) passes through."
    return lambda x: x if torch.is_tensor(x) or x[0].is_floating_point() else augment(x)


def fit_steps(model, groups, loader, loss_fn, augment=None) -> list[float]:
    "Seconds of each optimiser step of one `fit` epoch over `loader` but the first (rate 0: nothing can diverge)."
    stamps = []

    def stamp(step, m):
        sync()
        stamps.append(time.perf_counter())

    fit(
        model,
        loader,
        groups,
        {g["name"]: np.zeros(len(loader)) for g in groups},
        1,
        loss_fn=loss_fn,
        device=DEV,
        augment=augment,
        epoch_metrics=(),
        on_step=stamp,
        progress=False,
    )
    return np.diff(stamps).tolist()


def loader_rate(loader, augment=None, n: int = 8) -> float:
    "Images/s from the median seconds per batch of `loader` -> device -> `augment`."
    ts, it = [], iter(loader)
    for _ in range(n + 1):
        sync()
        t0 = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            x, y = next(it)
        if augment is not None:
            augment(batch_to(x, DEV))
            sync()
        ts.append(time.perf_counter() - t0)
    return len(y) / float(np.median(ts[1:]))


def build(path: str, arch: str, n_batches: int):
    "Model, parameter groups and loss of `path` on `arch` (timm, random init), masked as runs mask it."
    torch.manual_seed(0)
    bb = timm.create_model(arch, pretrained=False, num_classes=0)
    if path == "supervised":
        model = Classifier(bb, nn.Linear(bb.num_features, 10))
        return model, prepare_model(model, "M"), None
    obj = SwAVObjective(bb.num_features, 1, n_batches)  # augment=None: fit makes the crops
    model, groups = prepare_selfsup(bb, "SMN", obj)
    return model, groups, obj


def measure(
    path: str, arch: str, ds, px: int, bs: int, k: int, root: Path, t_build: float, gather_s: float, store_kb: float
) -> list[dict]:
    "The steady and first-epoch rows of one path and model; `k` timed steps each, bare and full."
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    make = supervised_train_loader if path == "supervised" else selfsup_train_loader
    dl, augment = make(ds, px, mean, std, bs, root=root, device=DEV)
    model, groups, obj = build(path, arch, k)
    loss_fn = obj if obj is not None else supervised_loss
    loader_s = loader_rate(dl, augment, max(3, k))
    x, y = next(iter(dl))
    with torch.no_grad():
        bare_batch = (augment(batch_to(x, DEV)), y.to(DEV))
    t = fit_steps(model, groups, Alternate(dl, bare_batch, 2 * k + 1), loss_fn, raw_only(augment))
    full, bare = t[0::2], t[1::2]  # step 0 (bare) is not timed
    B, F = bs / float(np.median(bare)), bs / float(np.median(full))
    n = len(ds)
    first_full = n / (t_build + n / F)  # decode into the store, then the epoch
    common = dict(
        path=path,
        source="jpeg",
        px=px,
        model=arch,
        batch=bs,
        bare_img_s=B,
        h100_img_s=H100_IMG_S[path].get(arch),
        device=str(DEV),
        n_images=n,
        store_kb_per_image=store_kb,
    )
    return [
        dict(common, epoch="steady", loader_img_s=loader_s, gather_img_s=gather_s, full_img_s=F, full_over_bare=F / B),
        dict(
            common,
            epoch="first",
            loader_img_s=n / t_build,
            gather_img_s=None,
            full_img_s=first_full,
            full_over_bare=first_full / B,
        ),
    ]


def per_sample_rate(ds, px: int, bs: int, n: int) -> float:
    "Images/s of the per-sample torchvision path (decode + RandomResizedCrop + flip per image, every epoch)."
    dl = make_loader(ds, train_transform(px), bs, shuffle=True, num_workers=default_workers(DEV))
    it, ts = iter(dl), []
    for _ in range(n + 1):
        t0 = time.perf_counter()
        next(it)
        ts.append(time.perf_counter() - t0)
    return bs / float(np.median(ts[1:]))


def show(rows: list[dict]):
    cols = [
        "path",
        "epoch",
        "model",
        "px",
        "batch",
        "loader_img_s",
        "gather_img_s",
        "h100_img_s",
        "bare_img_s",
        "full_img_s",
        "full_over_bare",
    ]
    fmt = lambda v: (
        "-"
        if v is None
        else f"{v:.2f}"
        if isinstance(v, float) and v < 10
        else f"{v:,.0f}"
        if isinstance(v, float)
        else str(v)
    )
    table = [cols] + [[fmt(r[c]) for c in cols] for r in rows]
    w = [max(len(r[i]) for r in table) for i in range(len(cols))]
    for r in table:
        print("  ".join(s.rjust(w[i]) for i, s in enumerate(r)))


def run(n: int, archs: list, k: int, tmp: Path, px: int = 224, long: int = 500) -> list[dict]:
    "Write the JPEGs under `tmp`, decode them into the store, and measure every path and model."
    batch = {"supervised": 32 if DEV.type == "cuda" else 8, "selfsup": 32 if DEV.type == "cuda" else 4}
    (tmp / "jpg").mkdir()
    t0 = time.perf_counter()
    ds = write_jpegs(tmp / "jpg", n, long=long)
    mb = sum(f.stat().st_size for f in (tmp / "jpg").iterdir()) / 2**20
    print(f"wrote {n} JPEGs ({mb:.0f} MB, {mb / n * 1024:.0f} kB each) in {time.perf_counter() - t0:.0f}s")
    t0 = time.perf_counter()
    store = TensorStore(ds, round(px / 0.875), root=tmp, progress=False)
    t_build = time.perf_counter() - t0
    store_kb = store.nbytes / n / 1024
    print(
        f"decoded once into {store.path.name}, shape {tuple(store.images.shape)}: "
        f"{store.nbytes / 2**20:.0f} MB on disk, {store_kb:.0f} kB per image "
        f"(a centre square would be {3 * store.size**2 / 1024:.0f} kB); {t_build:.1f}s, {n / t_build:.0f} img/s"
    )
    print(
        "per-sample torchvision path (decode + crop + flip per image, every epoch): "
        f"{per_sample_rate(ds, px, 8, 4):.0f} img/s"
    )
    gather_s = loader_rate(make_loader(store, None, 64, shuffle=True), n=8)
    print(f"gather from the store, batch 64, one process: {gather_s:,.0f} img/s")
    rows = []
    for path in ("supervised", "selfsup"):
        for arch in archs:
            t0 = time.perf_counter()
            rows += measure(path, arch, ds, px, batch[path], k, tmp, t_build, gather_s, store_kb)
            print(f"  {path} {arch}: {time.perf_counter() - t0:.0f}s", flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="200 JPEGs, ResNet-18 only, fewer steps (~1 min on a 2-core CPU)"
    )
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="48 small JPEGs at 32 px, a toy ResNet, one step: seconds; ratios mean nothing",
    )
    ap.add_argument("--json", metavar="PATH", help="write the rows as a JSON list of objects")
    a = ap.parse_args()
    n, archs, k = (200, ["resnet18"], 6) if a.quick else (2000, ["resnet18", "resnet50"], 10)
    if a.smoke:
        n, archs, k = 48, ["test_resnet"], 1  # timm's toy ResNet: the code path, not the numbers
    print(
        f"device: {DEV}"
        + (
            f" ({torch.cuda.get_device_name()})"
            if DEV.type == "cuda"
            else f" (CPU, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores)"
        )
        + f"; torch {torch.__version__}, timm {timm.__version__}; loader workers {default_workers(DEV)}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="smn_bench_"))
    px = 32 if a.smoke else 224
    try:
        rows = run(n, archs, k, tmp, px=px, long=128 if a.smoke else 500)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    show(rows)
    print(
        f"\nstore on disk: {rows[0]['store_kb_per_image']:.0f} kB per image "
        f"(uint8, whole images at {round(px / 0.875)} px on the shorter side, padded)."
    )
    print(
        "loader: store -> device -> augmentation (here on the CPU; first epoch: decoding into the store). "
        "gather: the CPU's share\n"
        "on a GPU machine (batch 64, one process). "
        "h100: what one H100 consumes (an estimate; see the top of this file).\n"
        "bare / full: fit's steps without / with loading and augmentation; full/bare target >= 0.9."
    )
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
