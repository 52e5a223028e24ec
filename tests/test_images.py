"Real images as users have them: crops from the whole picture, damaged files named, odd files read as PIL reads them."

import json, subprocess, sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import ks_2samp
from torchvision.io import encode_jpeg
from torchvision.transforms import RandomResizedCrop, v2

from smn_nb import augment as A
from smn_nb.augment import BatchAugment, BatchMultiCrop, crop_stored, random_boxes, train_transform
from smn_nb.datasets import BadImagesError, ImageDataset, read_image
from smn_nb.store import TensorStore, supervised_train_loader

ROOT = Path(__file__).resolve().parents[1]
ASPECTS = {"landscape": (375, 500), "portrait": (500, 375), "square": (300, 300), "panorama": (200, 800)}
N = 4000  # boxes per aspect and sampler
P_MIN = 1e-3  # a KS p-value below this: the two samplers differ


def photo(h: int, w: int, seed: int = 0) -> torch.Tensor:
    "A smooth uint8 RGB picture (3, h, w)."
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 5, generator=g), size=(h, w), mode="bicubic")
    return (x[0].clamp(0, 1) * 255).round().to(torch.uint8)


def write_jpegs(folder: Path, sizes, quality: int = 95) -> ImageDataset:
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f"{k:03d}.jpg" for k in range(len(sizes))]
    for f, (h, w), k in zip(files, sizes, range(len(sizes))):
        f.write_bytes(encode_jpeg(photo(h, w, k), quality=quality).numpy().tobytes())
    return ImageDataset.from_files(files, [k % 2 for k in range(len(sizes))], name=folder.name)


def tv_boxes(h: int, w: int, n: int, scale=(0.08, 1.0), seed: int = 0) -> np.ndarray:
    "(n,4) relative boxes (x, y, w, h) of torchvision's `RandomResizedCrop.get_params` on an h x w image."
    torch.manual_seed(seed)
    img = torch.empty(1, h, w)
    b = [RandomResizedCrop.get_params(img, scale, (3 / 4, 4 / 3)) for _ in range(n)]
    return np.array([[j / w, i / h, bw / w, bh / h] for i, j, bh, bw in b])


def captured_boxes(run) -> np.ndarray:
    "Relative boxes (x, y, w, h), in original pixels, that `crop_stored` is given while `run()` runs."
    seen = []

    def spy(x, sizes, boxes, size, flip=None):
        seen.append((boxes.double() / sizes[:, [1, 0, 1, 0]].double()).cpu().numpy())  # float64, as the reference's
        return crop_stored(x, sizes, boxes, size, flip)

    with mock.patch.object(A, "crop_stored", spy):
        run()
    return np.concatenate(seen)


def ks_pvalues(a: np.ndarray, b: np.ndarray) -> list[float]:
    return [float(ks_2samp(a[:, k], b[:, k]).pvalue) for k in range(4)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    "One JPEG per aspect, decoded into a store at 64 px (the shorter side)."
    root = tmp_path_factory.mktemp("data")
    ds = write_jpegs(root / "aspects", list(ASPECTS.values()))
    return TensorStore(ds, 64, root=root, progress=False, num_workers=0)


def store_batch(store, k: int, n: int):
    "Image `k` of `store` as a store batch of `n` copies."
    (x, s), _ = store[[k]]
    return x.expand(n, -1, -1, -1), s.expand(n, -1)


@pytest.mark.parametrize("aspect", list(ASPECTS))
def test_supervised_boxes_are_torchvisions(store, aspect):
    "Relative x, y, w, h of the store path's crops: distributed as `RandomResizedCrop`'s on the original picture."
    k = list(ASPECTS).index(aspect)
    h, w = ASPECTS[aspect]
    torch.manual_seed(1)
    ours = captured_boxes(lambda: BatchAugment(56)(store_batch(store, k, N)))
    ref = tv_boxes(h, w, N)
    p = ks_pvalues(ours, ref)
    print(
        f"{aspect} {h}x{w}: KS p (x, y, w, h) = {[round(v, 3) for v in p]}; mean rel. (w, h) "
        f"{ours[:, 2].mean():.3f}, {ours[:, 3].mean():.3f} vs {ref[:, 2].mean():.3f}, {ref[:, 3].mean():.3f}"
    )
    assert min(p) > P_MIN, p
    assert (ours[:, 0] + ours[:, 2] <= 1 + 1e-6).all() and (ours[:, 1] + ours[:, 3] <= 1 + 1e-6).all()


def test_old_centre_square_boxes_fail_the_same_test():
    "The test has power: the former store's boxes (crops of the centre square) are told apart from torchvision's."
    h, w = ASPECTS["landscape"]
    torch.manual_seed(1)
    sq = random_boxes(N, h, h).numpy()  # the centre h x h square of a landscape
    old = np.stack([(sq[:, 0] + (w - h) / 2) / w, sq[:, 1] / h, sq[:, 2] / w, sq[:, 3] / h], 1)
    assert min(ks_pvalues(old, tv_boxes(h, w, N))) < P_MIN


@pytest.mark.parametrize("aspect", ["landscape", "portrait", "panorama"])
def test_swav_multicrop_boxes_are_torchvisions(store, aspect):
    "SwAV's large (14-100%) and small (5-14%) crops: torchvision's boxes on the original picture, per view kind."
    k = list(ASPECTS).index(aspect)
    h, w = ASPECTS[aspect]
    torch.manual_seed(2)
    n = N // 2
    ours = captured_boxes(lambda: BatchMultiCrop(32, 14, n_large=2, n_small=2)(store_batch(store, k, n)))
    large, small = np.concatenate([ours[:n], ours[n : 2 * n]]), np.concatenate([ours[2 * n : 3 * n], ours[3 * n :]])
    p_large = ks_pvalues(large, tv_boxes(h, w, 2 * n, (0.14, 1.0)))
    p_small = ks_pvalues(small, tv_boxes(h, w, 2 * n, (0.05, 0.14)))
    print(f"swav {aspect}: KS p large {[round(v, 3) for v in p_large]}, small {[round(v, 3) for v in p_small]}")
    assert min(p_large) > P_MIN and min(p_small) > P_MIN, (p_large, p_small)


def banded(h: int = 300, w: int = 400) -> torch.Tensor:
    "A 4:3 picture: grey, its outer 12.5% on each side red (what a centre square never shows)."
    x = torch.full((3, h, w), 128, dtype=torch.uint8)
    band = w // 8
    x[:, :, :band] = x[:, :, w - band :] = torch.tensor([255, 0, 0], dtype=torch.uint8).view(3, 1, 1)
    return x


def red_share(crops: torch.Tensor) -> float:
    "Share of crops (float, 0-255) that show some red band."
    red = (crops[:, 0] > 200) & (crops[:, 1] < 60)
    return red.flatten(1).any(1).float().mean().item()


def test_outer_bands_of_a_4_3_image_are_seen_in_training(tmp_path):
    "The store path shows a 4:3 picture's outer bands in training crops, as often as torchvision's pipeline does."
    (tmp_path / "bands").mkdir()
    Image.fromarray(banded().permute(1, 2, 0).numpy()).save(tmp_path / "bands" / "0.png")
    ds = ImageDataset.from_files([tmp_path / "bands" / "0.png"] * 2, [0, 1], name="bands")
    dl, aug = supervised_train_loader(ds, 56, (0.0,) * 3, (1 / 255,) * 3, 2, root=tmp_path, num_workers=0)
    (x, s), _ = next(iter(dl))
    torch.manual_seed(0)
    ours = red_share(aug((x[:1].expand(2000, -1, -1, -1), s[:1].expand(2000, -1))))
    tf = train_transform(56, (0.0,) * 3, (1 / 255,) * 3)
    theirs = red_share(torch.stack([tf(banded()) for _ in range(1000)]))
    print(f"crops showing the outer bands: store path {ours:.3f}, torchvision {theirs:.3f}")
    assert ours > 0.3 and abs(ours - theirs) < 0.06, (ours, theirs)


@pytest.mark.parametrize(
    "hw,box",
    [
        ((375, 500), (40, 30, 300, 250)),
        ((500, 375), (20, 100, 200, 260)),
        ((300, 300), (0, 0, 300, 300)),
        ((200, 800), (500, 20, 150, 170)),
    ],
)
def test_fixed_box_matches_the_per_sample_reference(tmp_path, hw, box):
    "A fixed box of the original picture: the device crop is torchvision's `resized_crop` within resize tolerance."
    h, w = hw
    ds = write_jpegs(tmp_path / "one", [hw])
    st = TensorStore(ds, 256, root=tmp_path, progress=False, num_workers=0)
    (x, s), _ = st[[0]]
    x0, y0, bw, bh = box
    for flip in (False, True):
        ours = crop_stored(x, s, torch.tensor([[float(x0), y0, bw, bh]]), 224, torch.tensor([flip]))[0]
        ref = v2.functional.resized_crop(ds[0][0], y0, x0, bh, bw, [224, 224], antialias=True).float()
        ref = ref.flip(-1) if flip else ref
        d = (ours - ref).abs()
        print(
            f"{h}x{w} box {box} flip={flip}: mean |diff| {d.mean():.2f}, "
            f"interior max {d[:, 4:-4, 4:-4].max():.1f} grey levels"
        )
        assert d.mean() < 1 and d[:, 4:-4, 4:-4].max() < 5, (d.mean(), d.max())


def odd_files(folder: Path) -> dict:
    "Each kind of odd but valid file a dataset ships, written with PIL: {name: path}."
    rgb = Image.fromarray(photo(30, 40).permute(1, 2, 0).numpy())
    folder.mkdir(parents=True, exist_ok=True)
    f = {}

    def save(name, im, fmt, **kw):
        f[name] = folder / name
        im.save(f[name], format=fmt, **kw)

    save("cmyk.jpg", rgb.convert("CMYK"), "JPEG", quality=95)
    save("grey.jpg", rgb.convert("L"), "JPEG", quality=95)
    save("palette.png", rgb.convert("P", palette=Image.ADAPTIVE, colors=16), "PNG")
    save("grey16.png", Image.fromarray((np.arange(30 * 40).reshape(30, 40) * 40).astype(np.uint16)), "PNG")
    save("png-named.jpg", rgb, "PNG")
    save("rgba.png", rgb.convert("RGBA"), "PNG")
    save("grey-alpha.png", rgb.convert("LA"), "PNG")
    save("rgb.jpg", rgb, "JPEG", quality=95)
    return f


def test_odd_files_read_as_pil_reads_them(tmp_path):
    "CMYK and grey JPEGs, palette / 16-bit / alpha PNGs, a PNG named .jpg: read as `PIL.Image.open(f).convert('RGB')`."
    for name, path in odd_files(tmp_path).items():
        ours = read_image(path).permute(1, 2, 0).numpy().astype(int)
        pil = np.array(Image.open(path).convert("RGB")).astype(int)
        d = np.abs(ours - pil).max()
        print(f"{name}: shape {ours.shape}, max |read_image - PIL| = {d}")
        assert ours.shape == pil.shape and d <= (2 if name.endswith(".jpg") else 0), (name, d)


def test_odd_files_build_a_store(tmp_path):
    "A store of odd files builds, each image `Resize` of what PIL reads."
    files = odd_files(tmp_path / "odd")
    ds = ImageDataset.from_files(list(files.values()), [0] * len(files), name="odd")
    st = TensorStore(ds, 24, root=tmp_path, progress=False, num_workers=0)
    for k, path in enumerate(files.values()):
        pil = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        assert (st[k][0].int() - v2.Resize(24, antialias=True)(pil).int()).abs().max() <= 2


def dtd_layout(root: Path, n: int = 300) -> list[Path]:
    "CoOp's DTD layout: `n` JPEGs under ROOT/dtd/images/<class>/ and split_zhou_DescribableTextures.json."
    split, files = {"train": [], "val": [], "test": []}, []
    for k in range(n):
        c = ("banded", "zigzagged", "dotted")[k % 3]
        rel = f"{c}/{c}_{k:04d}.jpg"
        (root / "dtd" / "images" / c).mkdir(parents=True, exist_ok=True)
        files.append(root / "dtd" / "images" / rel)
        files[-1].write_bytes(encode_jpeg(photo(24 + k % 5, 32, k), quality=85).numpy().tobytes())
        split[("train", "val", "test")[k // 3 % 3]].append([rel, k % 3, c])
    (root / "dtd" / "split_zhou_DescribableTextures.json").write_text(json.dumps(split))
    return files


def test_a_run_on_damaged_files_names_them(tmp_path):
    "`smn-run` on a DTD layout with a truncated and an empty JPEG: one error naming both, and no store built."
    files = dtd_layout(tmp_path / "data", 300)
    files[1].write_bytes(files[1].read_bytes()[:-100])  # both in the training split
    files[10].write_bytes(b"")
    cmd = [
        sys.executable,
        "-c",
        "from smn_nb.experiment import run_cli; run_cli()",
        "-p",
        "dataset",
        "dtd",
        "-p",
        "method",
        "knn",
        "-p",
        "data_dir",
        str(tmp_path / "data"),
        "-p",
        "runs_dir",
        str(tmp_path / "runs"),
        "-p",
        "device",
        "cpu",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    out = r.stdout + r.stderr
    print(out[-1500:])
    assert r.returncode != 0
    for part in (
        "BadImagesError",
        "'dtd', split 'train': 2 of",
        files[1].name,
        files[10].name,
        "empty file",
        "split_zhou_DescribableTextures.json",
        "Re-download",
    ):
        assert part in out, part
    assert not list((tmp_path / "data" / "_cache" / "store").glob("dtd-train-*"))


def test_check_finds_them_before_a_run(tmp_path):
    "`check_datasets` (what smn-sweep calls) names the same files in one pass, without decoding the good ones."
    from smn_nb.check import check_datasets

    files = dtd_layout(tmp_path, 300)
    files[1].write_bytes(files[1].read_bytes()[:-100])  # both in the training split
    files[10].write_bytes(b"")
    with mock.patch("smn_nb.datasets.read_image", wraps=read_image) as dec:
        with pytest.raises(BadImagesError) as e:
            check_datasets(["dtd"], tmp_path, size=32, download=False)
    assert sorted(Path(p).name for p, _ in e.value.bad) == sorted([files[1].name, files[10].name])
    assert dec.call_count == 1  # only the file without an end marker
