"""The training loop: a plain epoch/step loop in the style of torchvision's reference scripts.

``train(recipe, output_dir)`` builds the model (from ``model.init`` for CURE), the method, SGD and the
step-wise LR schedule, then for every epoch: the method's steps (gradients averaged over processes, loss
checked, optimizer step, revision update), the LR decay, the per-epoch check (natural + PGD-20 on a fixed
held-out set, to ``metrics.jsonl`` and TensorBoard) and a checkpoint. The position and bookkeeping are one
:class:`.checkpoint.TrainState`, which is also what a checkpoint holds. A run directory that already holds a
checkpoint is resumed. At the end it writes ``model.safetensors`` and ``config.json`` (:mod:`.outputs`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import distributed as du
from ..errors import CureZooError
from ..rundir import BEST_WEIGHTS_FILE, CHECKPOINT_FILE, CONFIG_BLOCK, read_metrics
from .checkpoint import (
    TrainState,
    capture_rng_state,
    checkpoint_mismatch,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from .data import BatchPlan, crop_flip, generator, load_eval_set, load_train_set
from .epoch_eval import evaluate_epoch
from .grad_stats import gradient_statistics
from .methods import Batch, StepContext, build_method
from .modeling import build_model, compile_model, load_init_weights, sync_batchnorm
from .outputs import (
    final_paths,
    provenance,
    write_config,
    write_hparams,
    write_metrics,
    write_weights,
)
from .recipe import Recipe

_logger = logging.getLogger("cure_zoo.train")
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # both: checkpoint after the current step, then stop

# Recipe keys that may change between a run and its resumption (they do not change what is computed).
RESUMABLE_CHANGES = {
    "name",
    "description",
    "run.progress",
    "run.log_every",
    "run.grad_stats_every",
    "run.tensorboard",
    "run.device",
    "checkpoint.every_steps",
    "checkpoint.save_best",
    "eval.batch_size",
}


class TrainingDivergedError(CureZooError, RuntimeError):
    """The loss became NaN or infinite; the run stopped before the optimizer step."""


class RunInterrupted(RuntimeError):
    """SIGTERM or SIGINT (Ctrl-C) arrived; a checkpoint was written and the run can be resumed.

    ``exit_status`` is the shell's convention for death by that signal, 128 + its number (143, 130)."""

    def __init__(self, message: str, signum: int = signal.SIGTERM):
        super().__init__(message)
        self.signum = signum
        self.exit_status = 128 + int(signum)


@dataclass
class RunResult:
    output_dir: Path
    epochs_done: int
    global_step: int
    resumed: bool
    metrics: list[dict[str, Any]] = field(default_factory=list)
    already_finished: bool = False  # the directory held this recipe's finished run, which was left as it was


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "args":
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def recipe_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ between two resolved recipes, apart from the harmless ones. A key that the
    old recipe lacks (added to the code since) counts as its default, so older checkpoints still resume."""
    a, b = _flat(Recipe().to_dict()) | _flat(old), _flat(new)
    return {
        k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES
    }


def _listed(changes: dict[str, tuple[Any, Any]], most: int = 5) -> str:
    """The first few recipe changes for an error message: ``key: old -> new; ...``."""
    return "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(changes.items())[:most])


class Trainer:
    def __init__(self, recipe: Recipe, output_dir: str | Path, info: du.DistInfo, device: torch.device) -> None:
        self.recipe, self.info, self.device = recipe, info, device
        self.output_dir = Path(output_dir)
        self.ckpt_path = self.output_dir / CHECKPOINT_FILE
        self.state = TrainState()  # replaced in setup(), with the model, method, optimizer and scheduler
        self.tb = None

    # -- setup ----------------------------------------------------------------------------------------------

    def log(self, msg: str) -> None:
        if self.info.is_main:
            _logger.info(msg)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.recipe.run.amp == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def setup(self) -> None:
        r = self.recipe
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.memory_format = torch.channels_last if r.model.channels_last else torch.contiguous_format
        self.model = build_model(r)
        if r.model.sync_batchnorm:
            self.model = sync_batchnorm(self.model, self.info.world_size, self.device)
        self.init_sha256 = load_init_weights(self.model, r.model.init) if r.model.init else None
        self.model.to(self.device, memory_format=self.memory_format)
        forward = compile_model(self.model) if r.model.compile else self.model
        self.method = build_method(r, self.model, forward)
        self.method.prepare()
        du.broadcast_module_(self.model)
        params = [p for p in self.model.parameters() if p.requires_grad]
        o = r.optim
        self.optimizer = torch.optim.SGD(
            params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov
        )
        # MultiStepLR is stepped after each epoch, so a 1-based milestone m decays the lr from epoch m on.
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=[m - 1 for m in o.milestones], gamma=o.gamma
        )
        # rank 0 reads (and downloads) first, the others then find its files: one writer per file
        self.train_set = du.rank_zero_first(lambda: load_train_set(r.data)).to(self.device)
        self._stop_flags = (torch.zeros((), device=self.device), torch.ones((), device=self.device))
        self.plan = BatchPlan(
            len(self.train_set), o.batch_size, r.data.drop_last, r.run.seed, self.info.world_size, self.info.rank
        )
        self.eval_set = None
        if r.eval.every > 0 and self.info.is_main:
            es = load_eval_set(r.data, r.eval.examples)
            self.eval_set = es
            self.eval_images = es.images.to(self.device).contiguous(memory_format=self.memory_format)
            self.eval_labels = es.labels.to(self.device)
        # position and bookkeeping, and everything a checkpoint holds
        parts = {"model": self.model, "method": self.method, "optimizer": self.optimizer, "scheduler": self.scheduler}
        self.state = TrainState(components=parts)

    def finished_run(self) -> dict[str, Any] | None:
        """The ``cure_zoo`` block of a finished run of this recipe in the output directory (to be left as it is:
        its weights, claims and card stay), or None when there is none. Weights of another recipe, or of no
        recorded recipe, are refused: training would silently replace them."""
        weights, config_path = final_paths(self.output_dir)
        if not weights.exists():
            return None
        try:
            block = json.loads(config_path.read_text()).get(CONFIG_BLOCK) or {}
        except (OSError, ValueError, AttributeError):
            block = {}
        if not isinstance(block.get("recipe"), dict):
            if self.ckpt_path.is_file():
                return None  # stopped between writing the weights and the config: resuming finishes the run
            raise CureZooError(
                f"{self.output_dir} holds {weights.name} but no config.json recording the recipe that made them; "
                f"train into another --output directory"
            )
        changes = recipe_changes(block["recipe"], self.recipe.to_dict())
        if changes:
            raise CureZooError(
                f"{self.output_dir} holds the finished run of a different recipe ({_listed(changes)}); train into "
                f"another --output directory"
            )
        return block

    def maybe_resume(self) -> bool:
        # rank 0 decides; a process that cannot see rank 0's checkpoint (no shared filesystem) would start
        # elsewhere and the collectives would hang, so every process stops with the same error instead
        present = du.all_gather_object(self.ckpt_path.is_file())
        if not present[0]:
            return False
        if not all(present):
            missing = [rank for rank, here in enumerate(present) if not here]
            raise CureZooError(
                f"rank 0 resumes from {self.ckpt_path}, but rank(s) {missing} cannot see it; put --output on a "
                f"filesystem all processes share, or copy the checkpoint there"
            )
        ckpt = load_checkpoint(self.ckpt_path)
        changes = recipe_changes(ckpt["recipe"], self.recipe.to_dict())
        if changes:
            raise CureZooError(
                f"{self.output_dir} holds a checkpoint of a different recipe ({_listed(changes)}); resume with the "
                f"same recipe and --set values, or train into another --output directory"
            )
        st = self.state
        try:  # same recipe, yet entries missing or of other shapes: a damaged file
            st.load_state_dict(ckpt)
            rng = st.rng
            if len(rng) == self.info.world_size:
                restore_rng_state(rng[self.info.rank])
            else:
                self.log(
                    f"resuming with {self.info.world_size} processes instead of {len(rng)}: RNG states not restored"
                )
        except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as err:
            raise checkpoint_mismatch(self.ckpt_path, err) from None
        # metrics written after the checkpoint (an epoch that is about to be redone) are dropped
        st.metrics = [m for m in read_metrics(self.output_dir) if m["epoch"] <= st.epochs_done]
        self.log(
            f"resumed {self.output_dir} at epoch {st.epochs_done + 1}, step {st.step_in_epoch} "
            f"(global step {st.global_step})"
        )
        return True

    def save(self) -> None:
        """Checkpoint the current position (collective: every process contributes its RNG state)."""
        self.state.rng = du.all_gather_object(capture_rng_state())
        if self.info.is_main:
            save_checkpoint(self.ckpt_path, {"recipe": self.recipe.to_dict(), **self.state.state_dict()})
        du.barrier()

    # -- one step -------------------------------------------------------------------------------------------

    def make_batch(self, epoch_idx: int, step: int) -> Batch:
        seed = self.recipe.run.seed
        idx = self.plan.global_batch(epoch_idx, step, self.device)
        x = self.train_set.images[idx].float().div_(255)
        if self.recipe.data.augment:
            x = crop_flip(x, generator(self.device, seed, "augment", epoch_idx, step))
        local = self.plan.local_slice(len(idx))
        x_local = x[local].contiguous(memory_format=self.memory_format)
        shape = x.shape

        def noise(kind: str) -> torch.Tensor:
            g = generator(self.device, seed, "noise", kind, epoch_idx, step)
            draw = torch.randn if kind == "normal" else torch.rand
            return draw(shape, generator=g, device=self.device)[local].contiguous(memory_format=self.memory_format)

        return Batch(x_local, self.train_set.labels[idx][local], len(x_local) / len(idx), noise)

    def train_step(self, epoch: int, epoch_idx: int, step: int, ctx: StepContext) -> dict[str, float]:
        batch = self.make_batch(epoch_idx, step)
        self.optimizer.zero_grad(set_to_none=True)
        stats = self.method.step(batch, ctx)
        names = list(stats)
        # one small all-reduce per step: the global-batch means of the losses, and whether to stop
        vec = torch.stack(
            [stats[k].float() * batch.share for k in names]
            + [self._stop_flags[self.state.stop_requested]]  # preallocated: no host-to-device copy per step
        )
        du.all_reduce_sum_([vec])
        values = vec.tolist()
        out = dict(zip(names, values[:-1], strict=True))
        if not math.isfinite(out["loss"]):
            raise TrainingDivergedError(
                f"the training loss became {out['loss']} at epoch {epoch}, step {step + 1} (global step "
                f"{self.state.global_step + 1}); stopped before the optimizer step. The last good checkpoint is "
                f"{self.ckpt_path if self.ckpt_path.is_file() else '(none written yet)'}; lower optim.lr or check "
                f"the data and model.init"
            )
        every = self.recipe.run.grad_stats_every
        if every and (self.state.global_step + 1) % every == 0 and self.info.is_main:
            c = self.recipe.cure
            entry = gradient_statistics(self.model, self.method.mask_counts(), masking=c.masking, p=c.p)
            self.state.grad_stats.append({"global_step": self.state.global_step + 1, "epoch": epoch, **entry})
        self.optimizer.step()
        if self.info.enabled:
            du.broadcast_module_(self.model, params=False)
            revision = getattr(self.method, "revision", None)
            if revision is not None:
                du.broadcast_module_(revision.module, params=False)
        out.update(self.method.after_step(epoch))
        out["_stop"] = values[-1] > 0
        return out

    # -- the loop ------------------------------------------------------------------------------------------

    def run(self) -> RunResult:
        r = self.recipe
        done = self.finished_run()
        if done is not None:
            summary = done.get("training") or {}
            self.log(f"{self.output_dir} already holds this recipe's finished run; nothing to do, left as it is")
            return RunResult(
                self.output_dir, summary.get("epochs", 0), summary.get("global_steps", 0), False,
                read_metrics(self.output_dir), already_finished=True,
            )  # fmt: skip
        self.setup()
        resumed = self.maybe_resume()
        if self.info.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_hparams(self.output_dir, r)
            self.tb = _tensorboard(self.output_dir) if r.run.tensorboard else None
        self.log(
            f"{r.method} {r.model.architecture} on {r.data.dataset}: {len(self.train_set)} training images "
            f"({self.train_set.source}), {self.plan.steps_per_epoch} steps/epoch, {self.info.world_size} process(es) "
            f"on {self.device}"
        )
        previous = {s: signal.getsignal(s) for s in _STOP_SIGNALS}
        with contextlib.suppress(ValueError):  # not the main thread: no handler
            for s in _STOP_SIGNALS:
                signal.signal(s, self._on_stop_signal)
        try:
            for epoch_idx in range(self.state.epochs_done, r.optim.epochs):
                self.run_epoch(epoch_idx)
            self.finish()
        finally:
            with contextlib.suppress(ValueError):
                for s, handler in previous.items():
                    signal.signal(s, handler)
            if self.tb is not None:
                self.tb.close()
        st = self.state
        return RunResult(self.output_dir, st.epochs_done, st.global_step, resumed, st.metrics)

    def _on_stop_signal(self, signum, frame) -> None:
        """Stop after the current step with a checkpoint. A second Ctrl-C is the usual KeyboardInterrupt
        (stop now, keeping the previous checkpoint), for a step that takes too long to wait for."""
        self.state.stop_requested = True
        self.state.stop_signal = signum
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def run_epoch(self, epoch_idx: int) -> None:
        r, st, epoch = self.recipe, self.state, epoch_idx + 1
        self.method.on_epoch_start(epoch)
        self.model.train()
        ctx = StepContext(epoch=epoch, autocast=self.autocast, reduce_=du.all_reduce_sum_)
        steps = self.plan.steps_per_epoch
        bar = _progress(
            steps, st.step_in_epoch, f"epoch {epoch}/{r.optim.epochs}", self.info.is_main and r.run.progress
        )
        t0 = time.perf_counter()
        for step in range(st.step_in_epoch, steps):
            out = self.train_step(epoch, epoch_idx, step, ctx)
            st.global_step += 1
            st.step_in_epoch = step + 1
            stop = out.pop("_stop")
            for k, v in out.items():
                st.epoch_sums[k] = st.epoch_sums.get(k, 0.0) + v
            st.epoch_count += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{out['loss']:.4f}", refresh=False)
            if self.tb is not None and st.global_step % r.run.log_every == 0:
                for k, v in out.items():
                    self.tb.add_scalar(f"train/{k}", v, st.global_step)
            if stop:
                st.train_time += time.perf_counter() - t0
                self.save()
                signum = st.stop_signal  # SIGTERM where only another rank was signalled
                raise RunInterrupted(
                    f"{signal.Signals(signum).name}: checkpoint written at epoch {epoch}, step {step + 1}; run the "
                    f"same command to resume",
                    signum,
                )
            every = r.checkpoint.every_steps
            if every and st.global_step % every == 0 and step + 1 < steps:
                st.train_time += time.perf_counter() - t0
                t0 = time.perf_counter()
                self.save()
        if bar is not None:
            bar.close()
        st.train_time += time.perf_counter() - t0
        lr = self.scheduler.get_last_lr()[0]  # the rate this epoch's steps used, before the decay
        self.scheduler.step()
        record = self.end_of_epoch(epoch, lr)
        st.next_epoch(epoch)
        if self.info.is_main:
            st.metrics.append(record)
            write_metrics(self.output_dir, st.metrics)
        self.save()

    def end_of_epoch(self, epoch: int, lr: float) -> dict[str, Any]:
        r, st = self.recipe, self.state
        train = {k: v / max(st.epoch_count, 1) for k, v in st.epoch_sums.items()}
        record: dict[str, Any] = {
            "epoch": epoch,
            "global_step": st.global_step,
            "lr": lr,
            "train": train,
            "train_time_s": round(st.train_time, 2),
        }
        if st.grad_stats:
            record["grad_stats"] = list(st.grad_stats)
        due = r.eval.every > 0 and (epoch % r.eval.every == 0 or epoch == r.optim.epochs)
        if due and self.info.is_main:
            # on the eager module: compiling the check's grad modes too would add graphs for little gain
            ev = evaluate_epoch(self.model, self.eval_images, self.eval_labels, r.eval, self.autocast)
            record["eval"] = ev
            key = f"pgd{r.eval.pgd_steps}_acc" if r.eval.pgd_steps > 0 else "nat_acc"
            if not st.best or ev[key] > st.best["value"]:
                st.best = {"epoch": epoch, "metric": key, "value": ev[key], "nat_acc": ev["nat_acc"]}
                if r.checkpoint.save_best:  # its sha256 goes into config.json, so the file can be checked
                    st.best["weights_sha256"] = write_weights(self.output_dir / BEST_WEIGHTS_FILE, self.model, r)
            record["best"] = dict(st.best)
            if self.tb is not None:
                for k, v in ev.items():
                    self.tb.add_scalar(f"eval/{k}", v, epoch)
        if self.info.is_main:
            ev = record.get("eval", {})
            shown = " ".join(f"{k} {v:.2f}%" for k, v in ev.items() if k.endswith("_acc"))
            self.log(f"epoch {epoch}/{r.optim.epochs} loss {train.get('loss', float('nan')):.4f} {shown}".rstrip())
        du.barrier()
        return record

    def finish(self) -> None:
        if not self.info.is_main:
            du.barrier()
            return
        r = self.recipe
        weights, _ = final_paths(self.output_dir)
        sha = write_weights(weights, self.model, r)
        block = provenance(
            r,
            self.state,
            weights_sha256=sha,
            init_sha256=self.init_sha256,
            train_source=self.train_set.source,
            train_examples=len(self.train_set),
            eval_source=self.eval_set.source if self.eval_set is not None else None,
            steps_per_epoch=self.plan.steps_per_epoch,
            world_size=self.info.world_size,
            device=str(self.device),
        )
        write_config(self.output_dir, self.model, r, block)
        self.log(f"wrote {weights} (sha256 {sha[:16]}...) and config.json")
        du.barrier()


def _progress(total: int, initial: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)


def _tensorboard(output_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(log_dir=str(output_dir / "tensorboard"))


def train(recipe: Recipe, output_dir: str | Path) -> RunResult:
    """Train ``recipe`` into ``output_dir`` (resuming a checkpoint there), in this process or as one
    process of a torchrun job."""
    info, device = du.init_distributed(recipe.run.device)
    return Trainer(recipe, output_dir, info, device).run()
