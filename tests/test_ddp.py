"""`fit` under DistributedDataParallel: two CPU processes (gloo), each with half of every global batch, train as one
process with the whole batch does — supervised masks (M), and SMN with Sinkhorn summed over the processes.

Tolerance: every trained tensor within 1e-5 + 1e-4 x its size (absolute), every epoch's loss within 1e-5 relative.
The two runs differ only in the order of float sums (two half-batch gradients averaged by DDP against one
whole-batch gradient), ~1e-7 relative per step; the models have no BatchNorm (a process normalises its own shard)
and SMN runs without the queue (each process queues its own embeddings), the two documented departures."""

import os, socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from smn_nb.files import checked_torch_load
from smn_nb.selfsup import SwAVObjective, prepare_selfsup
from smn_nb.train import (
    Classifier,
    cosine_schedule,
    distributed,
    fit,
    init_distributed,
    prepare_model,
    supervised_loss,
    trainable_state,
)

EPOCHS, BATCH, WORLD = 3, 8, 2  # BATCH is the global batch: 4 images per process


def _backbone():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def _counted(loss_fn, seen):
    "`loss_fn`, noting how many images each step of this process sees."
    return lambda model, batch: seen.append(len(batch[1])) or loss_fn(model, batch)


def _supervised(ckpt, seen):
    torch.manual_seed(0)
    m = Classifier(_backbone(), nn.Linear(16, 3))
    groups = prepare_model(m, "M", lr=5.0, head_lr=0.1)
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (64,), generator=g)
    x = torch.randn(64, 3, 8, 8, generator=g) + y[:, None, None, None]
    dl = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y),
        batch_size=BATCH,
        shuffle=True,
        generator=torch.Generator(),
        drop_last=True,
    )
    sch = {gr["name"]: cosine_schedule(gr["lr"], EPOCHS, len(dl)) for gr in groups}
    return m, fit(
        m, dl, groups, sch, EPOCHS, loss_fn=_counted(supervised_loss, seen), seed=1, checkpoint=ckpt, progress=False
    )


def _smn(ckpt, seen):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    crops = [torch.randn(64, 3, 12, 12, generator=g) for _ in range(2)] + [
        torch.randn(64, 3, 6, 6, generator=g) for _ in range(2)
    ]
    ds = torch.utils.data.TensorDataset(*crops, torch.zeros(64, dtype=torch.long))
    collate = lambda items: (
        [torch.stack([it[i] for it in items]) for i in range(4)],
        torch.stack([it[4] for it in items]),
    )
    dl = torch.utils.data.DataLoader(
        ds, batch_size=BATCH, shuffle=True, generator=torch.Generator(), collate_fn=collate, drop_last=True
    )
    obj = SwAVObjective(16, EPOCHS, len(dl), n_prototypes=6, out_dim=4, queue_length=0, freeze_prototypes=3)
    model, groups = prepare_selfsup(_backbone(), "SMN", obj, lr=5.0)
    sch = {gr["name"]: cosine_schedule(gr["lr"], EPOCHS, len(dl)) for gr in groups}
    r = fit(
        model,
        dl,
        groups,
        sch,
        EPOCHS,
        loss_fn=_counted(obj, seen),
        extra={"swav": obj},
        after_backward=obj.after_backward,
        seed=1,
        checkpoint=ckpt,
        progress=False,
    )
    return model, r


RUNS = {"supervised": _supervised, "smn": _smn}


def _worker(rank, kind, port, folder):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    init_distributed()
    try:
        assert distributed() == (rank, WORLD)
        seen = []
        m, r = RUNS[kind](os.path.join(folder, "checkpoint.pt"), seen)
        torch.save(
            {"state": trainable_state(m), "history": r.history, "seen": seen}, os.path.join(folder, f"rank{rank}.pt")
        )
        torch.distributed.barrier()  # nobody leaves while another still talks
    finally:
        torch.distributed.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", list(RUNS))
def test_two_processes_equal_one(kind, tmp_path):
    torch.set_num_threads(1)
    mp.spawn(_worker, args=(kind, _free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ref_model, ref = RUNS[kind](None, seen := [])
    r0, r1 = (torch.load(tmp_path / f"rank{i}.pt") for i in range(WORLD))
    assert set(seen) == {BATCH} and set(r0["seen"]) == set(r1["seen"]) == {BATCH // WORLD}  # each process its half
    assert r0["history"] == r1["history"]  # one record, rank 0's, everywhere
    assert [h["epoch"] for h in r0["history"]] == list(range(EPOCHS))
    for a, b in zip(r0["history"], ref.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a.get("active_frac") == pytest.approx(b.get("active_frac"), abs=1e-3)
    want = trainable_state(ref_model)
    assert set(r0["state"]) == set(want)
    moved = 0
    for k, v in want.items():
        for got in (r0["state"][k], r1["state"][k]):  # both processes hold the same model
            torch.testing.assert_close(got, v, rtol=1e-4, atol=1e-5, msg=k)
        moved += "score" in k and not torch.equal(v, torch.ones_like(v))
    assert moved  # the scores did train
    assert checked_torch_load(tmp_path / "checkpoint.pt")["epoch"] == EPOCHS - 1  # rank 0 wrote it


def test_ddp_needs_a_seeded_loader(tmp_path, monkeypatch):
    import smn_nb.train as T

    monkeypatch.setattr(T, "distributed", lambda: (0, 2))
    m = Classifier(_backbone(), nn.Linear(16, 3))
    groups = prepare_model(m, "M")
    dl = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(8, 3, 8, 8), torch.zeros(8, dtype=torch.long)), batch_size=4
    )
    sch = {gr["name"]: cosine_schedule(1.0, 1, len(dl)) for gr in groups}
    with pytest.raises(ValueError, match="give train_loader a seeded `generator`"):
        fit(m, dl, groups, sch, 1, progress=False)
