"""Training checkpoints: RNG states (a run resumes with fewer visible GPUs per process than it was saved with) and
the payload (TrainState saves the flat layout the trainer listed by hand before it, and a checkpoint written that
way resumes bit-exactly)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from cure_zoo.training.checkpoint import capture_rng_state, restore_rng_state


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_restore_with_more_saved_cuda_states_than_visible_devices():
    state = capture_rng_state()
    expected = _draws()
    # a checkpoint written by a process that saw 8 GPUs (CUDA generator states are 16-byte seed+offset tensors);
    # on this machine there are fewer (none on a CPU-only one), and the restore must not index past them
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8) for _ in range(8)]
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    _draws()  # move every generator on
    assert restore_rng_state(state) == min(8, visible)
    assert _draws() == expected  # Python, NumPy and torch CPU generators are back where they were saved


def test_restore_without_cuda_states():
    state = capture_rng_state()
    state.pop("cuda", None)
    expected = _draws()
    assert restore_rng_state(state) == 0
    assert _draws() == expected


# ---------------------------------------------------------------------------------------------------------
# the payload: TrainState.state_dict(), in the flat layout checkpoints had before TrainState existed

# the keys the trainer's save() listed by hand before TrainState (grad_stats only when the epoch had records)
LEGACY_KEYS = [
    "recipe", "model", "method", "optimizer", "scheduler", "epochs_done", "step_in_epoch", "global_step",
    "epoch_sums", "epoch_count", "best", "train_time", "rng",
]  # fmt: skip


def _legacy_save(trainer) -> None:
    """The trainer's save() as it was before TrainState: the payload listed by hand (one process)."""
    st = trainer.state
    payload = {
        "recipe": trainer.recipe.to_dict(),
        "model": trainer.model.state_dict(),
        "method": trainer.method.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "epochs_done": st.epochs_done,
        "step_in_epoch": st.step_in_epoch,
        "global_step": st.global_step,
        "epoch_sums": st.epoch_sums,
        "epoch_count": st.epoch_count,
        "best": st.best,
        "train_time": st.train_time,
        "rng": [capture_rng_state()],
    }
    if st.grad_stats:
        payload["grad_stats"] = st.grad_stats
    torch.save(dict(payload, format="cure_zoo.train_checkpoint/1"), trainer.ckpt_path)


def _parts() -> dict:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[0, 1], gamma=0.1)
    return {"model": model, "optimizer": optimizer, "scheduler": scheduler}


def test_train_state_round_trips_and_saves_the_legacy_layout():
    from cure_zoo.training.checkpoint import TrainState

    torch.manual_seed(0)
    a = TrainState(components=_parts(), epochs_done=1, step_in_epoch=2, global_step=5, epoch_count=2)
    a.epoch_sums, a.best, a.train_time, a.rng = {"loss": 1.5}, {"epoch": 1, "value": 9.0}, 3.25, [{"torch": 1}]
    a.components["optimizer"].step()
    a.components["scheduler"].step()
    a.metrics, a.stop_requested = [{"epoch": 1}], True  # run-only: never saved
    saved = a.state_dict()
    assert list(saved) == [k for k in LEGACY_KEYS if k not in ("recipe", "method")]  # no grad_stats while empty
    a.grad_stats = [{"global_step": 5}]
    saved = a.state_dict()
    assert saved["grad_stats"] == [{"global_step": 5}]
    b = TrainState(components=_parts())
    b.load_state_dict(saved)
    assert b == TrainState(**{**vars(a), "metrics": [], "stop_requested": False})
    assert torch.equal(b.components["model"].weight, a.components["model"].weight)
    assert b.components["scheduler"].get_last_lr() == a.components["scheduler"].get_last_lr()
    saved.pop("grad_stats")  # a checkpoint from before gradient statistics: the empty default
    b.load_state_dict(saved)
    assert b.grad_stats == []
    saved.pop("best")
    with pytest.raises(KeyError, match="best"):
        b.load_state_dict(saved)


def test_a_checkpoint_in_the_layout_before_train_state_resumes_bit_exactly(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from cure_zoo.rundir import RunDirError, read_metrics
    from cure_zoo.training import RunInterrupted, load_recipe, train
    from cure_zoo.training.trainer import Trainer

    values = {
        "method": "st",
        "model.architecture": "cifar_resnet18",
        "model.args": {"widths": [8, 8, 8, 8]},
        "data.source": "bundled",
        "data.train_examples": 64,
        "optim.batch_size": 32,
        "optim.lr": 0.05,
        "optim.epochs": 2,
        "optim.milestones": [2],
        "eval.examples": 8,
        "eval.pgd_steps": 1,
        "checkpoint.every_steps": 0,
        "checkpoint.save_best": False,
        "run.grad_stats_every": 1,
        "run.progress": False,
        "run.tensorboard": False,
    }
    whole = train(load_recipe(None, values), tmp_path / "whole")
    written = torch.load(tmp_path / "whole" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert sorted(written) == sorted([*LEGACY_KEYS, "format"])  # this code writes the layout it always did
    # the old code's checkpoints, mid-epoch 2 (one step done, its loss sums and gradient records pending)
    original = Trainer.train_step

    def stop_after_epoch_2_step_1(self, epoch, epoch_idx, step, ctx):
        self.state.stop_requested = (epoch, step) == (2, 0)
        return original(self, epoch, epoch_idx, step, ctx)

    monkeypatch.setattr(Trainer, "train_step", stop_after_epoch_2_step_1)
    monkeypatch.setattr(Trainer, "save", _legacy_save)
    with pytest.raises(RunInterrupted):
        train(load_recipe(None, values), tmp_path / "cut")
    old = torch.load(tmp_path / "cut" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert (old["epochs_done"], old["step_in_epoch"], len(old["grad_stats"])) == (1, 1, 1)
    monkeypatch.undo()
    resumed = train(load_recipe(None, values), tmp_path / "cut")
    assert resumed.resumed and resumed.global_step == whole.global_step
    ref, got = (
        load_file(str(tmp_path / "whole" / "model.safetensors")),
        load_file(str(tmp_path / "cut" / "model.safetensors")),
    )
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)

    def same(records):
        return [{k: v for k, v in r.items() if k != "train_time_s"} for r in records]

    assert same(read_metrics(tmp_path / "cut")) == same(read_metrics(tmp_path / "whole"))
    assert [m["lr"] for m in resumed.metrics] == [0.05, 0.05 * 0.1]
    # a finished run whose metrics.jsonl was damaged since: one line naming the file and the line, not a traceback
    (tmp_path / "whole" / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": "two"}\n')
    with pytest.raises(RunDirError, match="metrics.jsonl line 2 is not a metrics record"):
        train(load_recipe(None, values), tmp_path / "whole")
