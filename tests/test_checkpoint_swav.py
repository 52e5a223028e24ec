"Self-supervised (SwAV) checkpoints: all `fit` saves loads with weights_only=True; a damaged one falls back a step."

import warnings

import torch
from torch import nn

from smn_nb.files import checked_torch_load
from smn_nb.selfsup import SwAVObjective, prepare_selfsup
from smn_nb.train import CheckpointWarning, cosine_schedule, fit, prev_checkpoint, trainable_state

torch.set_num_threads(1)


class TinyBackbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )

    def forward(self, x):
        return self.net(x)


def crops_loader(n=32, bs=8):
    g = torch.Generator().manual_seed(0)
    crops = [torch.randn(n, 3, 16, 16, generator=g) for _ in range(2)] + [
        torch.randn(n, 3, 8, 8, generator=g) for _ in range(2)
    ]
    ds = torch.utils.data.TensorDataset(*crops, torch.zeros(n, dtype=torch.long))
    collate = lambda items: (
        [torch.stack([it[i] for it in items]) for i in range(4)],
        torch.stack([it[4] for it in items]),
    )
    return torch.utils.data.DataLoader(
        ds, batch_size=bs, shuffle=True, generator=torch.Generator(), collate_fn=collate, drop_last=True
    )


def smn(ckpt=None, crash_after=None, epochs=4):
    torch.manual_seed(0)
    dl = crops_loader()
    obj = SwAVObjective(8, epochs, len(dl), n_prototypes=6, out_dim=4, queue_length=16, freeze_prototypes=6)
    model, groups = prepare_selfsup(TinyBackbone(), "SMN", obj, lr=50.0)
    sch = {g["name"]: cosine_schedule(g["lr"], epochs, len(dl)) for g in groups}

    def boom(e, h):
        if e == crash_after:
            raise KeyboardInterrupt

    try:
        r = fit(
            model,
            dl,
            groups,
            sch,
            epochs,
            loss_fn=obj,
            extra={"swav": obj},
            after_backward=obj.after_backward,
            checkpoint=ckpt,
            on_epoch_end=boom,
            progress=False,
        )
    except KeyboardInterrupt:
        return None
    return model, obj, r


def test_swav_checkpoint_is_weights_only_and_falls_back(tmp_path):
    ref_model, ref_obj, _ = smn()
    ckpt = tmp_path / "checkpoint.pt"
    assert smn(ckpt, crash_after=2) is None
    st = checked_torch_load(ckpt)  # weights_only=True inside: would raise on any pickled object
    assert st["epoch"] == 2 and "queue.queue" in st["extra"]["swav"] and st["optimizer"]["state"]
    assert checked_torch_load(prev_checkpoint(ckpt))["epoch"] == 1
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 1
    ckpt.write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        model, obj, r = smn(ckpt)
    assert [x.category for x in w if x.category is CheckpointWarning] == [CheckpointWarning]
    assert r.resumed_from == 1 and r.set_aside == [str(ckpt) + ".corrupt"]
    assert int(obj.step) == int(ref_obj.step)
    assert torch.equal(obj.queue.queue, ref_obj.queue.queue)
    for (k, v), (k2, v2) in zip(trainable_state(ref_model).items(), trainable_state(model).items()):
        assert k == k2 and torch.equal(v, v2), k
