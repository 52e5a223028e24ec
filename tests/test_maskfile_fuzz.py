"""Mask-file fuzz: hundreds of corrupted and crafted variants of one small mask file.

A checksum only proves a file is what its writer wrote, so most variants here are *re-signed*: a header
field edited, a payload replaced, then the SHA-256 recomputed, as a buggy writer or an attacker would.
For every variant, `load_masks` must raise `MaskFileError` naming the file (never an "unexpected" error,
i.e. one the reader's own checks did not foresee), and leave the model bit-identical: state_dict,
requires_grad flags, parametrizations. A few variants change nothing that matters (an unknown extra
field, a mask re-coded with another codec); those may load, but only with the original masks.

File layout: MAGIC + sha256(body) + body, body = u32 header length + zlib(JSON header) + payload,
payload = the coded masks back to back, then the torch.save'd state. Format 3 codes some masks (`ctx`) against
the base weights, whose fingerprint (`weights_sha256`) the header records: crafted context-coded payloads,
`bins` fields and fingerprints are fuzzed too, and a model with other weights must be refused by name.
"""

import bz2, copy, functools, hashlib, io, json, lzma, pickle, random, struct, time, zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from smn_nb.masking import MaskFileError, ctx_encode, decode_mask, load_masks, mask_model, masked_tensors, save_masks


def world_weights():
    "The masked tensors' base weights of `tiny_net`, by name."
    return {k: v for k, v in tiny_net().named_parameters() if k.endswith("weight") and v.dim() > 1}


MAGIC = b"SMNMASK1"


# --- the file and the model ---------------------------------------------------------------------------


def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3),
        nn.Conv2d(32, 64, 3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 4),
    )


def convs_and_linear(mn, pn, m):
    return isinstance(m, (nn.Conv2d, nn.Linear)) and pn == "weight"


def set_masks(model, rng):
    "Masks that make the writer use every codec: all ones, sparse random, dense random, periodic, |w|-dependent."
    sms = list(masked_tensors(model).values())
    ws = [p.detach().numpy().reshape(-1) for k, p in model.named_parameters() if k.endswith(".original")]
    patterns = [
        lambda n, w: np.ones(n, bool),
        lambda n, w: rng.random(n) > 0.1,
        lambda n, w: (
            ~((np.abs(w) >= np.quantile(np.abs(w), 0.9)) & (rng.random(n) < 0.5)) & (rng.random(n) > 0.01)
        ),  # ctx
        lambda n, w: (np.arange(n) // 288) % 2 == 0,
        lambda n, w: rng.random(n) > 0.5,
    ]
    for sm, w, pat in zip(sms, ws, patterns):
        sm.set_mask(torch.from_numpy(pat(sm.score.numel(), w)).view_as(sm.score))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    base = tiny_net()
    src = mask_model(copy.deepcopy(base), convs_and_linear)
    set_masks(src, np.random.default_rng(0))
    src.train()(torch.randn(4, 3, 12, 12))  # move the BatchNorm statistics
    hdr = save_masks(src, d / "orig.smn", meta=dict(backbone="tiny"), extra=dict(note=torch.arange(3)))
    masks = {k: sm.mask().clone() for k, sm in masked_tensors(src).items()}
    premasked = mask_model(copy.deepcopy(base), convs_and_linear)  # a model already masked (differently)
    set_masks(premasked, np.random.default_rng(1))
    return dict(dir=d, base=base, premasked=premasked, data=(d / "orig.smn").read_bytes(), hdr=hdr, masks=masks)


# --- rewriting and re-signing ---------------------------------------------------------------------------


def split(data):
    "(header dict, header bytes, payload) of a mask file's bytes."
    body = data[40:]
    (hl,) = struct.unpack("<I", body[:4])
    return json.loads(zlib.decompress(body[4 : 4 + hl])), body[4 : 4 + hl], body[4 + hl :]


def sign(hb, payload):
    "A mask file with compressed header bytes `hb` and `payload`, under a valid checksum."
    body = struct.pack("<I", len(hb)) + hb + payload
    return MAGIC + hashlib.sha256(body).digest() + body


def resign(data, edit=None, payload=None):
    "`data` with `edit(header)` applied and its payload mapped through `payload`, re-signed."
    h, _, p = split(data)
    if edit is not None:
        edit(h)
    return sign(zlib.compress(json.dumps(h).encode()), payload(p) if payload else p)


def with_blob(data, i, blob, **fields):
    "Replace tensor `i`'s coded mask by `blob` (and set `fields`), moving the offsets after it: a consistent layout."
    h, _, p = split(data)
    e = h["tensors"][i]
    p = p[: e["offset"]] + blob + p[e["offset"] + e["length"] :]
    delta = len(blob) - e["length"]
    e.update(length=len(blob), **fields)
    for later in h["tensors"][i + 1 :]:
        later["offset"] += delta
    h["state_offset"] += delta
    h["mask_bits"] += 8 * delta
    return sign(zlib.compress(json.dumps(h).encode()), p)


def with_state(data, state_bytes):
    "Replace the stored state by `state_bytes`, lengths fixed up."
    h, _, p = split(data)
    h["state_length"] = len(state_bytes)
    return sign(zlib.compress(json.dumps(h).encode()), p[: h["state_offset"]] + state_bytes)


def torch_bytes(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class Evil:
    "Pickles to a call that creates `marker`: loading it without weights_only would run that code."

    marker = None

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


# --- the variants -----------------------------------------------------------------------------------------

FAIL, ANY = True, False  # must fail / may load, but only with the original masks

JUNK = ["x", None, True, 2.5, [1], {"a": [1, {"b": None}]}, -1]


def entry_variants(data, h):
    "Every field of every tensor entry: off by one, out of range, wrong type, missing; plus harmless edits."
    out = []
    names = [e["name"] for e in h["tensors"]]
    for i, e in enumerate(h["tensors"]):

        def ed(**kw):
            return lambda hh: hh["tensors"][i].update(kw)

        def drop(k):
            return lambda hh: hh["tensors"][i].pop(k)

        tag = f"t{i}[{e['codec']}]"
        n, shape = e["n"], e["shape"]
        for k in ("offset", "length", "n", "ones"):
            for d in (-1, 1):
                if e[k] + d >= 0:
                    out.append((f"{tag}.{k}{d:+d}", resign(data, ed(**{k: e[k] + d})), FAIL))
        for k in (
            "name",
            "shape",
            "mode",
            "mu",
            "s0",
            "density",
            "offset",
            "length",
            "n",
            "codec",
            "minority",
            "ones",
            "digest",
        ):
            out.append((f"{tag}.del_{k}", resign(data, drop(k)), FAIL))
        for k in ("offset", "length", "n", "ones", "minority", "codec", "mode", "shape", "name", "digest"):
            for j, v in enumerate(JUNK):
                if v != e[k] and not (k == "minority" and v is True):
                    out.append((f"{tag}.{k}=junk{j}", resign(data, ed(**{k: v})), FAIL))
        out += [
            (f"{tag}.n=1e12", resign(data, ed(n=10**12)), FAIL),
            (f"{tag}.n=1e12+shape", resign(data, ed(n=10**12, shape=[10**6, 10**6])), FAIL),
            (f"{tag}.n_float", resign(data, ed(n=float(n))), FAIL),
            (f"{tag}.shape_flat", resign(data, ed(shape=[n])), FAIL),
            (f"{tag}.shape_reversed", resign(data, ed(shape=shape[::-1])), FAIL),
            (
                f"{tag}.shape+1",
                resign(data, ed(shape=[shape[0] + 1] + shape[1:], n=n // shape[0] * (shape[0] + 1))),
                FAIL,
            ),
            (f"{tag}.shape_neg", resign(data, ed(shape=[-shape[0]] + shape[1:])), FAIL),
            (f"{tag}.minority_flipped", resign(data, ed(minority=not e["minority"])), FAIL),
            (
                f"{tag}.digest_changed",
                resign(data, ed(digest=("0" if e["digest"][0] != "0" else "1") + e["digest"][1:])),
                FAIL,
            ),
            (
                f"{tag}.digest_upper",
                resign(data, ed(digest=e["digest"].upper() if e["digest"].upper() != e["digest"] else "G" * 16)),
                FAIL,
            ),
            (f"{tag}.mode_bogus", resign(data, ed(mode="bogus")), FAIL),
            (f"{tag}.mu=s0", resign(data, ed(mu=e["s0"])), FAIL),
            (f"{tag}.mu_nan", resign(data, ed(mu=float("nan"))), FAIL),
            (f"{tag}.s0_inf", resign(data, ed(s0=float("inf"))), FAIL),
            (f"{tag}.s0_str", resign(data, ed(s0="1")), FAIL),
            (f"{tag}.density=2", resign(data, ed(density=2.0)), FAIL),
            (f"{tag}.name_buffer", resign(data, ed(name="1.running_mean")), FAIL),
            (f"{tag}.name_bias", resign(data, ed(name="0.bias")), FAIL),
            (f"{tag}.name_missing", resign(data, ed(name="nope.weight")), FAIL),
            (f"{tag}.name_empty", resign(data, ed(name="")), FAIL),
            (f"{tag}.name_dup", resign(data, ed(name=names[(i + 1) % len(names)])), FAIL),
            (f"{tag}.unknown_field", resign(data, ed(comment="harmless")), ANY),
            (f"{tag}.mode_topk", resign(data, ed(mode="topk")), ANY),  # the mode of a *new* ScoreMask
            (f"{tag}.s0_other", resign(data, ed(s0=e["s0"] + 0.5)), ANY),
            (f"{tag}.density_set", resign(data, ed(density=0.5)), ANY),
        ]
        for c in ("raw", "rice", "lzma", "bz2", "ctx"):
            if c != e["codec"]:
                out.append((f"{tag}.codec->{c}", resign(data, ed(codec=c, k=0, n_rare=0, ulen=0, bins=16)), FAIL))
        if e["codec"] == "ctx":
            for j, v in enumerate(JUNK + [0, 8, 15, 17, 10**12]):
                out.append((f"{tag}.bins=junk{j}", resign(data, ed(bins=v)), FAIL))
            out.append((f"{tag}.del_bins", resign(data, drop("bins")), FAIL))
        if e["codec"] == "rice":
            for k in ("k", "n_rare", "ulen"):
                for d in (-1, 1, 5, 100, 10**12):
                    if e[k] + d >= 0:
                        out.append((f"{tag}.{k}{d:+d}", resign(data, ed(**{k: e[k] + d})), FAIL))
                for j, v in enumerate(JUNK):
                    out.append((f"{tag}.{k}=junk{j}", resign(data, ed(**{k: v})), FAIL))
                out.append((f"{tag}.del_{k}", resign(data, drop(k)), FAIL))
            out.append(
                (f"{tag}.n_rare=0", resign(data, ed(n_rare=0)), FAIL)
                if e["n_rare"]
                else (f"{tag}.n_rare=1", resign(data, ed(n_rare=1)), FAIL)
            )
    return out


def header_variants(data, h):
    "Top-level fields, the tensor list as a whole, and the header's bytes."
    out = []

    def up(**kw):
        return lambda hh: hh.update(kw)

    def drop(k):
        return lambda hh: hh.pop(k)

    for v in (1, 2, 4, 0, -2, "3", 3.0, True, None, [3], 10**30):
        out.append((f"format={v!r}", resign(data, up(format=v)), FAIL))
    for k in (
        "format",
        "meta",
        "tensors",
        "arch",
        "weights_sha256",
        "state_offset",
        "state_length",
        "mask_bits",
        "n_masked",
    ):
        out.append((f"del_{k}", resign(data, drop(k)), FAIL))
    for k in ("state_offset", "state_length", "n_masked"):
        for d in (-1, 1, 10**12):
            out.append((f"{k}{d:+d}", resign(data, up(**{k: h[k] + d})), FAIL))
        for j, v in enumerate(JUNK):
            out.append((f"{k}=junk{j}", resign(data, up(**{k: v})), FAIL))
    for d in (-8, -1, 8):
        out.append((f"mask_bits{d:+d}", resign(data, up(mask_bits=h["mask_bits"] + d)), FAIL))
    fp = h["weights_sha256"]
    for j, v in enumerate(
        JUNK + ["0" * 64, fp.upper(), fp[:-1], fp + "0", fp[::-1], fp[:63] + ("1" if fp[63] != "1" else "2")]
    ):
        out.append((f"weights_sha256=junk{j}", resign(data, up(weights_sha256=v)), FAIL))
    ts, arch = h["tensors"], h["arch"]
    out += [(f"meta={v!r}", resign(data, up(meta=v)), FAIL) for v in ([], "x", None, 3)]
    out += [
        (f"arch=junk{j}", resign(data, up(arch=v)), FAIL)
        for j, v in enumerate(([], "x", None, [[1, 2]], [["a", [-1]]], arch[:-1]))
    ]
    out += [
        ("arch_shape", resign(data, up(arch=[[arch[0][0], [1]]] + arch[1:])), FAIL),
        ("arch_name", resign(data, up(arch=[["zz.weight", arch[0][1]]] + arch[1:])), FAIL),
        ("arch_extra", resign(data, up(arch=arch + [["extra.weight", [3]]])), FAIL),
        ("meta_backbone", resign(data, lambda hh: hh["meta"].update(backbone="other")), ANY),  # no backbone= asked
        ("meta_extra", resign(data, lambda hh: hh["meta"].update(junk=[1, {"a": None}])), ANY),
        ("unknown_top_field", resign(data, up(comment="harmless")), ANY),
    ]
    out += [
        (f"tensors=junk{j}", resign(data, up(tensors=v)), FAIL)
        for j, v in enumerate(([], {}, "x", None, [1], [[]], [{}], [{"name": {"a": [1, {"b": None}]}}], [None] + ts))
    ]
    out += [
        ("tensors_reversed", resign(data, up(tensors=ts[::-1])), FAIL),
        ("tensors_drop_first", resign(data, up(tensors=ts[1:])), FAIL),
        ("tensors_drop_last", resign(data, up(tensors=ts[:-1])), FAIL),
        ("tensors_dup_appended", resign(data, up(tensors=ts + ts[-1:])), FAIL),
        (
            "tensors_swap_entries_not_bytes",
            resign(
                data,
                up(
                    tensors=ts[:1]
                    + [dict(ts[2], offset=ts[1]["offset"]), dict(ts[1], offset=ts[1]["offset"] + ts[2]["length"])]
                    + ts[3:]
                ),
            ),
            FAIL,
        ),
    ]
    _, hb, p = split(data)
    js = json.dumps(h).encode()
    out += [
        ("header=list", sign(zlib.compress(b"[]"), p), FAIL),
        ("header=str", sign(zlib.compress(b'"x"'), p), FAIL),
        ("header=null", sign(zlib.compress(b"null"), p), FAIL),
        ("header=number", sign(zlib.compress(b"2"), p), FAIL),
        ("header_deep_nesting", sign(zlib.compress(b"[" * 200_000 + b"]" * 200_000), p), FAIL),
        ("header_not_json", sign(zlib.compress(js[:-1]), p), FAIL),
        ("header_bad_utf8", sign(zlib.compress(js[:10] + b"\xff\xfe" + js[10:]), p), FAIL),
        ("header_huge_int", sign(zlib.compress(js.replace(b'"format": 3', b'"format": 3' + b"0" * 5000)), p), FAIL),
        ("header_nan_offset", sign(zlib.compress(js.replace(b'"offset": 0', b'"offset": NaN', 1)), p), FAIL),
        ("header_zlib_junk", sign(b"\x78\x9c" + bytes(random.Random(1).randrange(256) for _ in range(60)), p), FAIL),
        ("header_zlib_cut", sign(hb[:-3], p), FAIL),
        ("header_zlib_trailing", sign(hb + b"junk", p), FAIL),
        ("header_not_zlib", sign(js, p), FAIL),
        ("header_bomb", sign(zlib.compress(b" " * (65 << 20), 1), p), FAIL),
    ]
    body = data[40:]
    hl = struct.unpack("<I", body[:4])[0]
    for v in (hl - 1, hl + 1, 0, len(body), 2**32 - 1):
        b2 = struct.pack("<I", v) + body[4:]
        out.append((f"header_length={v}", MAGIC + hashlib.sha256(b2).digest() + b2, FAIL))
    out.append(("bad_magic_signed", b"SMNMASK0" + data[8:], FAIL))
    return out


@functools.lru_cache(None)
def bombs():
    "An lzma and a bz2 stream of 4 MB that compress to a few KB."
    return lzma.compress(b"\xff" * (4 << 20), preset=1), bz2.compress(b"\xff" * (4 << 20), 1)


def payload_variants(data, h, tmp):
    "Garbage and crafted payloads under a valid checksum, and crafted states."
    out, rng = [], random.Random(2)
    _, _, p = split(data)
    junk = lambda n: bytes(rng.randrange(256) for _ in range(n))
    for i, e in enumerate(h["tensors"]):
        tag = f"t{i}[{e['codec']}]"
        for s in range(6):  # one byte changed, re-signed
            if not e["length"]:
                break
            j = e["offset"] + rng.randrange(e["length"])
            out.append(
                (
                    f"{tag}.payload_byte{s}",
                    resign(data, payload=lambda q, j=j: q[:j] + bytes([q[j] ^ (1 << rng.randrange(8))]) + q[j + 1 :]),
                    ANY,
                )
            )
        out += [
            (f"{tag}.payload_junk", with_blob(data, i, junk(max(e["length"], 8))), FAIL),
            (f"{tag}.payload_empty", with_blob(data, i, b""), FAIL)
            if e["length"]
            else (f"{tag}.payload_nonempty", with_blob(data, i, b"\0"), FAIL),
            (f"{tag}.payload_zlib", with_blob(data, i, zlib.compress(b"\0" * 100)), FAIL),
            (f"{tag}.lzma_junk", with_blob(data, i, lzma.compress(b"")[:12] + junk(40), codec="lzma"), FAIL),
            (f"{tag}.lzma_bomb", with_blob(data, i, bombs()[0], codec="lzma"), FAIL),
            (f"{tag}.bz2_bomb", with_blob(data, i, bombs()[1], codec="bz2"), FAIL),
            (
                f"{tag}.lzma_wrong_bits",
                with_blob(data, i, lzma.compress(b"\x55" * ((e["n"] + 7) // 8)), codec="lzma"),
                FAIL,
            ),
            (f"{tag}.bz2_in_lzma", with_blob(data, i, bz2.compress(b"\0" * ((e["n"] + 7) // 8)), codec="lzma"), FAIL),
            (
                f"{tag}.raw_inverted",
                with_blob(data, i, bytes(255 - b for b in np.packbits(np.ones(e["n"], bool))), codec="raw"),
                FAIL,
            ),
        ]
    # context-coded payloads crafted against the wrong weights, cut, extended
    ws = {k: v.detach().numpy() for k, v in world_weights().items()}  # in their shapes: dim 0 = output channels
    for i, e in enumerate(h["tensors"]):
        if e["codec"] != "ctx":
            continue
        tag, w = f"t{i}[ctx]", ws[e["name"]]
        m = decode_mask(e, p[e["offset"] : e["offset"] + e["length"]], weights=w)
        blob = p[e["offset"] : e["offset"] + e["length"]]
        out += [
            (f"{tag}.ctx_other_weights", with_blob(data, i, ctx_encode(m, w[::-1].copy())), FAIL),
            (
                f"{tag}.ctx_negated_order",
                with_blob(
                    data, i, ctx_encode(m, np.argsort(np.abs(w).reshape(-1)).reshape(w.shape).astype(np.float32))
                ),
                FAIL,
            ),
            (f"{tag}.ctx_cut_word", with_blob(data, i, blob[:-4]), FAIL),
            (f"{tag}.ctx_cut_byte", with_blob(data, i, blob[:-1]), FAIL),
            (f"{tag}.ctx_extra_word", with_blob(data, i, blob + b"\0\0\0\0"), ANY),
            (f"{tag}.ctx_junk_words", with_blob(data, i, junk(len(blob))), FAIL),
            (f"{tag}.ctx_zero_words", with_blob(data, i, bytes(len(blob))), FAIL),
            (f"{tag}.ctx_ff_words", with_blob(data, i, b"\xff" * len(blob)), FAIL),
            (f"{tag}.ctx_empty", with_blob(data, i, b""), FAIL),
            (f"{tag}.ctx_as_raw", with_blob(data, i, np.packbits(m).tobytes(), codec="ctx"), FAIL),
        ]
    # re-coded with another codec, consistently: harmless
    for i, e in enumerate(h["tensors"]):
        m = decode_mask(e, p[e["offset"] : e["offset"] + e["length"]], weights=ws[e["name"]])
        packed = np.packbits(m).tobytes()
        out += [
            (f"t{i}.recoded_raw", with_blob(data, i, packed, codec="raw"), ANY),
            (f"t{i}.recoded_bz2", with_blob(data, i, bz2.compress(packed), codec="bz2"), ANY),
            (f"t{i}.recoded_lzma", with_blob(data, i, lzma.compress(packed), codec="lzma"), ANY),
        ]
    # the state
    bufs = {k: v for k, v in torch.load(io.BytesIO(p[h["state_offset"] :]), weights_only=True)["buffers"].items()}
    k0 = next(iter(bufs))
    Evil.marker = tmp / "pwned"
    out += [
        ("state_junk", with_state(data, junk(500)), FAIL),
        ("state_empty", with_state(data, b""), FAIL),
        ("state_truncated", with_state(data, p[h["state_offset"] : -50]), FAIL),
        ("state_list", with_state(data, torch_bytes([1, 2])), FAIL),
        ("state_no_extra", with_state(data, torch_bytes(dict(buffers=bufs))), FAIL),
        ("state_extra_key", with_state(data, torch_bytes(dict(buffers=bufs, extra={}, more=1))), FAIL),
        ("state_buffers_list", with_state(data, torch_bytes(dict(buffers=[1], extra={}))), FAIL),
        (
            "state_buffer_shape",
            with_state(data, torch_bytes(dict(buffers={**bufs, k0: torch.zeros(99)}, extra={}))),
            FAIL,
        ),
        (
            "state_buffer_unknown",
            with_state(data, torch_bytes(dict(buffers={**bufs, "zz": torch.zeros(1)}, extra={}))),
            FAIL,
        ),
        ("state_buffer_not_tensor", with_state(data, torch_bytes(dict(buffers={**bufs, k0: [1.0]}, extra={}))), FAIL),
        (
            "state_buffer_int_key",
            with_state(data, torch_bytes(dict(buffers={**bufs, 3: torch.zeros(1)}, extra={}))),
            FAIL,
        ),
        ("state_runs_code", with_state(data, torch_bytes(dict(buffers=bufs, extra=dict(x=Evil())))), FAIL),
        ("state_pickle_not_zip", with_state(data, pickle.dumps(Evil())), FAIL),
    ]
    return out


def random_variants(data):
    "Byte flips, truncations, extensions, insertions anywhere: the checksum (or the magic) must catch them."
    rng, out = random.Random(3), []
    for s in range(60):
        j = rng.randrange(len(data))
        out.append((f"flip{s}@{j}", data[:j] + bytes([data[j] ^ (1 << rng.randrange(8))]) + data[j + 1 :], FAIL))
    for j in [0, 1, 7, 8, 39, 40, 43, 44] + sorted(rng.sample(range(45, len(data)), 22)):
        out.append((f"truncated@{j}", data[:j], FAIL))
    for s, n in enumerate((1, 2, 100, 5000, 1, 3, 7, 64, 1000, 1)):
        out.append((f"extended{s}+{n}", data + bytes(rng.randrange(256) for _ in range(n)), FAIL))
    for s in range(8):
        j = rng.randrange(8, len(data))
        out.append((f"inserted{s}@{j}", data[:j] + b"\0" + data[j:], FAIL))
    out.append(("zeros", bytes(len(data)), FAIL))
    return out


def all_variants(world):
    data = world["data"]
    h = split(data)[0]
    return (
        entry_variants(data, h)
        + header_variants(data, h)
        + payload_variants(data, h, world["dir"])
        + random_variants(data)
    )


# --- the checks -------------------------------------------------------------------------------------------


def bits(t):
    "A tensor's dtype, shape and raw bytes: equal only if bit-identical (NaN, -0.0 included)."
    return t.dtype, tuple(t.shape), t.detach().reshape(-1).contiguous().view(torch.uint8).clone()


def snapshot(model):
    "What a failed load must not change: every state_dict tensor bit for bit, requires_grad flags, parametrizations."
    return (
        {k: bits(v) for k, v in model.state_dict().items()},
        {k: p.requires_grad for k, p in model.named_parameters()},
        sorted(
            f"{mn}.{pn}"
            for mn, m in model.named_modules()
            if parametrize.is_parametrized(m)
            for pn in m.parametrizations.keys()
        ),
    )


def same(a, b):
    return (
        a[0].keys() == b[0].keys()
        and a[1] == b[1]
        and a[2] == b[2]
        and all(a[0][k][:2] == b[0][k][:2] and torch.equal(a[0][k][2], b[0][k][2]) for k in a[0])
    )


def test_original_loads_exactly(world):
    codecs = {e["codec"] for e in world["hdr"]["tensors"]}
    assert {"raw", "rice", "ctx"} <= codecs and codecs & {"lzma", "bz2"}, codecs  # the fuzz touches every decoder path
    for dst in (copy.deepcopy(world["base"]), copy.deepcopy(world["premasked"])):
        load_masks(dst, world["dir"] / "orig.smn", backbone="tiny")
        got = {k: sm.mask() for k, sm in masked_tensors(dst).items()}
        assert got.keys() == world["masks"].keys()
        assert all(torch.equal(got[k], world["masks"][k]) for k in got)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_fuzz_variants_fail_cleanly(world):
    t0 = time.perf_counter()
    variants = all_variants(world)
    labels = [v[0] for v in variants]
    assert len(set(labels)) == len(labels), sorted(l for l in labels if labels.count(l) > 1)
    problems, n_failed, n_loaded = [], 0, 0
    for idx, (label, blob, must_fail) in enumerate(variants):
        path = world["dir"] / f"v{idx:03d}.smn"
        path.write_bytes(blob)
        model = copy.deepcopy(world["premasked"] if idx % 2 else world["base"])
        before = snapshot(model)
        try:
            load_masks(model, path)
        except MaskFileError as e:
            n_failed += 1
            msg = str(e)
            if str(path) not in msg:
                problems.append(f"{label}: message lacks the path: {msg}")
            if "unexpected" in msg:
                problems.append(f"{label}: not caught by an explicit check: {msg}")
            if not same(before, snapshot(model)):
                problems.append(f"{label}: the model changed although loading failed")
        except Exception as e:  # noqa: BLE001 - any other exception type is the bug this test looks for
            problems.append(f"{label}: raised {type(e).__name__}: {e}")
        else:
            n_loaded += 1
            got = {k: sm.mask() for k, sm in masked_tensors(model).items()}
            if must_fail:
                problems.append(f"{label}: loaded although it should fail")
            if got.keys() != world["masks"].keys() or not all(torch.equal(got[k], world["masks"][k]) for k in got):
                problems.append(f"{label}: LOADED A DIFFERENT MASK")
        path.unlink()
    assert not (world["dir"] / "pwned").exists(), "a pickle in a mask file ran code"
    assert not problems, f"{len(problems)} of {len(variants)} variants misbehaved:\n" + "\n".join(problems[:40])
    assert len(variants) >= 200 and n_failed >= 200, (len(variants), n_failed)
    print(
        f"{len(variants)} variants: {n_failed} raised MaskFileError, {n_loaded} loaded the original masks, "
        f"{time.perf_counter() - t0:.1f}s"
    )


def test_evil_state_would_run_code(world, tmp_path):
    "The code-running state is real: plain pickle would run it (so `weights_only=True` is what stops it)."
    Evil.marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Evil()))
    assert (tmp_path / "ran").exists()
    with pytest.raises(Exception):
        torch.load(io.BytesIO(torch_bytes(dict(x=Evil()))), weights_only=True)


def test_other_base_weights_fail_cleanly(world):
    "The same architecture with other weights: a clear error naming the file, before anything is decoded or changed."
    for nudge in (1e-7, 1.0):
        model = copy.deepcopy(world["base"])
        with torch.no_grad():
            model[6].weight.view(-1)[5] += nudge
        before = snapshot(model)
        with pytest.raises(MaskFileError, match="learned on other base weights") as e:
            load_masks(model, world["dir"] / "orig.smn")
        assert str(world["dir"] / "orig.smn") in str(e.value) and same(before, snapshot(model))


def test_unreadable_paths_are_mask_file_errors(world, tmp_path):
    model = copy.deepcopy(world["base"])
    before = snapshot(model)
    for path in (tmp_path / "absent.smn", tmp_path):
        with pytest.raises(MaskFileError, match="cannot be read") as e:
            load_masks(model, path)
        assert str(path) in str(e.value)
    assert same(before, snapshot(model))
