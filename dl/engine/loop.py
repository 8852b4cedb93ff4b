"""The training loop every launcher runs on every rank, over any ``TrainData`` (dl/data/protocol.py).

Builds the optimizer and schedule from the settings; trains with the data's loss, L1/L2 penalties and
gradient clipping; evaluates on dev after each epoch; calls the epoch-end callbacks (early stopping, a
search's pruning: dl/engine/callbacks.py); checkpoints atomically; resumes exactly from the last checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dl.engine.callbacks import EpochEnd, stop_reason
from dl.engine.checkpoint import read_checkpoint, restore, save_checkpoint
from dl.engine.distributed import densify_grads, sparse_embeddings
from dl.engine.metrics import bias_variance
from dl.engine.optim import (
    Optimizers,
    Schedulers,
    build_optimizer,
    build_scheduler,
    clip_gradients,
    constrain_max_norm,
    param_groups,
    penalty,
)
from dl.engine.settings import WorkerSettings
from dl.engine.tracking import MetricsSink
from dl.models import describe
from etl.core.errors import InputError

AMP_MODES = ("none", "bf16", "fp16")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def last_heartbeat(run_dir: Path) -> dict:
    """The furthest heartbeat of any rank in ``<run_dir>/ranks`` (``step`` 0, ``epoch`` 0 when there is none)."""
    beats = []
    for path in (run_dir / "ranks").glob("rank*.json"):
        with contextlib.suppress(OSError, ValueError):
            beats.append(json.loads(path.read_text()))
    return max(beats, key=lambda b: b["step"], default={"step": 0, "epoch": 0})


class Heartbeat:
    """Each rank's ``<run dir>/ranks/rank<r>.json`` after every step: its pid, host address, epoch and step.
    The launcher reads how far a failed attempt got (the steps a restart loses), and a person or a test
    can see which process is which rank."""

    def __init__(self, run_dir: Path | None, rank: int, address: str | None) -> None:
        self.path = run_dir / "ranks" / f"rank{rank}.json" if run_dir is not None else None
        self.fixed = {"rank": rank, "pid": os.getpid(), "address": address}
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, epoch: int, step: int) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self.fixed, "epoch": epoch, "step": step, "time": round(time.time(), 3)}))
        tmp.replace(self.path)

    def started(self, launch: str | None, attempt: int, resumed_from_step: int) -> None:
        """Rank 0, before its first step: one line in ``ranks/starts.jsonl`` for this start of the ranks, with the
        step the heartbeats left by an earlier start had reached (no rank passes step 1 before rank 0 has read
        them: every step exchanges gradients). Every start after a launch's first is a restart, whoever made
        it: the launcher (a new attempt) or Spark retrying the barrier stage (the same attempt again)."""
        if self.path is None:
            return
        last = last_heartbeat(self.path.parent.parent)
        line = {"launch": launch, "attempt": attempt, "pid": os.getpid(), "time": round(time.time(), 3),
                "resumed_from_step": resumed_from_step, "reached_step": last["step"], "epoch": last["epoch"]}
        with open(self.path.parent / "starts.jsonl", "a") as fh:
            fh.write(json.dumps(line) + "\n")


def train_step(net, model, optimizer, scheduler, micro: list, data, s: WorkerSettings, dist, amp: Amp) -> float | None:
    """One optimizer step over ``micro``: ``(batch, shadow)`` pairs, ``sync.accumulate`` of them (fewer at the
    end of an epoch). Each micro-batch's loss is divided by their number and its gradient added locally; the
    last one's backward exchanges the sum (DDP), or ``synchronize`` does (Horovod). ``shadow``: this rank is
    out of data while others are not; ``batch`` (the last one it trained on) goes through the wrapped model
    with its loss times zero, so the exchange sees a zero gradient from it (a forward through ``net``: DDP
    only reduces after its own forward) and the optimizer and schedule still step like everywhere else
    (dl/engine/distributed.py). Returns the mean loss of the real micro-batches (None: all were shadows)."""
    optimizer.zero_grad()
    losses = []
    for j, (batch, shadow) in enumerate(micro):
        with contextlib.nullcontext() if j == len(micro) - 1 else dist.no_sync(net):
            with amp.autocast():
                loss = data.loss(net, batch) + penalty(model, s.train.l1, s.train.l2)
            amp.backward(loss * (0.0 if shadow else 1.0 / len(micro)))
        if not shadow:
            losses.append(float(loss.item()))
    apply_update(model, optimizer, s, dist, amp)
    if s.schedule.name != "plateau":
        scheduler.step()
    return sum(losses) / len(losses) if losses else None


def apply_update(model, optimizer, s: WorkerSettings, dist, amp: Amp) -> None:
    """After a step's backward passes: the averaged gradients (before clipping), made dense, unscaled and
    clipped, then the optimizer's step and the max-norm constraint on ``model`` (a whole model or one part)."""
    dist.synchronize(optimizer)
    densify_grads(model)
    amp.unscale(optimizer)
    clip_gradients(model, s.train.clip_norm, s.train.clip_value)
    dist.step(optimizer, amp.step_fn(optimizer))
    constrain_max_norm(model, s.train.max_norm)


def adversarial_step(nets: dict, model, optimizer, scheduler, micro: list, data, s: WorkerSettings, dist,
                     amp: Amp) -> dict[str, float] | None:
    """One step of each of ``data.phases`` in turn (a GAN: the discriminator's, then the generator's), each part
    of the model with its own optimizer and schedule (``optimizer.named[phase]``): its loss over the micro-batches
    (``data.loss(nets, batch, phase)``), gradients for that part's parameters only (the other part's get none:
    the exchange and its optimizer see nothing from this phase), then the exchange, clipping and the step as in
    ``train_step``. Returns each phase's mean loss over the real micro-batches (None: all were shadows)."""
    losses: dict[str, float] = {}
    for phase in data.phases:
        part, opt = getattr(model, phase), optimizer.named[phase]
        params = [p for p in part.parameters() if p.requires_grad]
        opt.zero_grad()
        got = []
        for j, (batch, shadow) in enumerate(micro):
            with contextlib.nullcontext() if j == len(micro) - 1 else dist.no_sync(nets[phase]):
                with amp.autocast():
                    loss = data.loss(nets, batch, phase) + penalty(part, s.train.l1, s.train.l2)
                amp.backward(loss * (0.0 if shadow else 1.0 / len(micro)), inputs=params)
            if not shadow:
                got.append(float(loss.item()))
        apply_update(part, opt, s, dist, amp)
        if s.schedule.name != "plateau":
            scheduler.named[phase].step()
        if got:
            losses[phase] = sum(got) / len(got)
    return losses or None


class Amp:
    """Mixed precision by config: ``bf16`` (CPU or GPU autocast) or ``fp16`` (GPU autocast with a
    gradient scaler); ``none`` is plain fp32."""

    def __init__(self, mode: str, device: torch.device) -> None:
        if mode not in AMP_MODES:
            raise InputError(f"amp={mode!r}: one of {', '.join(AMP_MODES)}")
        if mode == "fp16" and device.type != "cuda":
            raise InputError("amp=fp16 needs a CUDA device; on CPU use amp=bf16")
        self.mode, self.device = mode, device
        self.scaler = torch.amp.GradScaler(device.type) if mode == "fp16" else None

    def autocast(self):
        if self.mode == "none":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if self.mode == "bf16" else torch.float16)

    def backward(self, loss: torch.Tensor, inputs: list | None = None) -> None:
        """``inputs``: only these parameters get gradients (None: every one the loss depends on)."""
        (self.scaler.scale(loss) if self.scaler else loss).backward(inputs=inputs)

    def unscale(self, optimizer) -> None:
        if self.scaler:
            self.scaler.unscale_(optimizer)  # clip the true gradients

    def step_fn(self, optimizer):
        if not self.scaler:
            return optimizer.step
        def step():
            self.scaler.step(optimizer)
            self.scaler.update()
        return step


def pick_device(name: str, local_rank: int) -> torch.device:
    """``auto``: this rank's GPU when CUDA exists, else CPU; ``cuda`` without a GPU is refused."""
    if name not in ("auto", "cpu", "cuda"):
        raise InputError(f"device={name!r}: auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device=cuda but this machine has no CUDA device: use device=auto or cpu")
    if name != "cpu" and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def weights_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def fit(s: WorkerSettings, dist, device: torch.device, amp: Amp, data) -> dict:
    """Train ``data`` (a ``TrainData``) on this rank; returns the history, the step count, a digest of the final
    weights, the test figures of the weights chosen on dev and (one process) the model."""
    rank, world_size = dist.rank, dist.world_size
    tasks, tok_hash, label_map = data.tasks, data.fingerprint, data.label_map
    model = data.build_model().to(device)
    model_desc = describe(s.model.name, model)
    phases = tuple(getattr(data, "phases", ()))  # parts of the model stepped in turn, one optimizer each (a GAN)
    penalized = s.train.l1 or s.train.l2  # a penalty's gradient is dense over the whole table
    if dist.world_size > 1 and s.sync.sparse_embeddings and not penalized and not phases:
        sparse_embeddings(model)
    if phases:
        optimizer = Optimizers({p: build_optimizer(param_groups(getattr(model, p), s.optim), s.optim) for p in phases})
        net = {}
        for p in phases:  # each part wrapped on its own: its exchange carries its gradients only
            net[p], optimizer.named[p] = dist.wrap(getattr(model, p), optimizer.named[p],
                                                   find_unused=not data.every_parameter_used, sync=s.sync, name=p)
    else:
        optimizer = build_optimizer(param_groups(model, s.optim), s.optim)
        net, optimizer = dist.wrap(model, optimizer, find_unused=not data.every_parameter_used,
                                   sync=s.sync)  # same start on every rank
    # every rank must see the same schedule length (cosine depends on it), and ranks own different row counts
    accumulate = s.sync.accumulate
    steps_per_epoch = math.ceil(dist.max_int(data.planned_steps()) / accumulate)
    total_steps = steps_per_epoch * s.train.epochs
    scheduler = (Schedulers({p: build_scheduler(o, s.schedule, total_steps) for p, o in optimizer.named.items()})
                 if phases else build_scheduler(optimizer, s.schedule, total_steps=total_steps))
    ckpt = Path(s.run.checkpoint_dir) / "last.pt" if s.run.checkpoint_dir else None
    best_path = ckpt.with_name("best.pt") if ckpt is not None else None
    best_weights = None  # the weights of the best dev epoch: model selection on dev only
    start_epoch, skip, step, history, best, stale = 0, 0, 0, [], -math.inf, 0
    if (s.run.resume or s.run.restartable) and ckpt is not None and ckpt.is_file():  # every rank loads the same file
        state = read_checkpoint(ckpt)
        if state["tokenizer_sha256"] != tok_hash:
            raise InputError(f"{ckpt} was trained with {data.fingerprint_of} {state['tokenizer_sha256'][:12]}, "
                             f"{s.data.shards} has {tok_hash[:12]}: resume with the same shards or start a new run")
        restore(state, model=model, optimizer=optimizer, scheduler=scheduler)
        dist.broadcast_state(model, optimizer)
        progress = state["metrics"]
        start_epoch, step, skip = state["epoch"], state["step"], progress.get("batches_done", 0)
        if skip == 0:  # an end-of-epoch checkpoint: continue with the next epoch
            start_epoch += 1
        history, best, stale = progress["history"], progress["best"], progress["stale"]
        if best_path.is_file():
            best_weights = read_checkpoint(best_path)["model"]
    sink = MetricsSink(s.run.tensorboard_dir, s.run.tracking_uri, s.run.run_id) if rank == 0 else MetricsSink()
    beat = Heartbeat(Path(s.run.checkpoint_dir) if s.run.checkpoint_dir else None, rank, dist.address)
    if rank == 0:
        beat.started(s.run.launch_id, s.run.attempt, step)

    def checkpoint(epoch: int, batches_done: int) -> None:
        if ckpt is not None and rank == 0:
            save_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch, step=step,
                            config=model_desc, tokenizer_sha256=tok_hash,
                            label_map=label_map,
                            metrics={"history": history, "best": best, "stale": stale,
                                     "batches_done": batches_done})

    ran, steps_this_call, interrupted, stopped_by, last_batch = 0, 0, False, None, None
    lr_trace = hashlib.sha256()  # every step's learning rates: equal on every rank, shadow steps included
    for epoch in range(start_epoch, s.train.epochs):
        if s.run.max_epochs_this_call is not None and ran >= s.run.max_epochs_this_call:
            break
        mine, batches = data.epoch(epoch)
        n_batches = dist.max_int(mine)  # every rank steps as often as the rank with the most batches
        n_steps = math.ceil(n_batches / accumulate)
        done = skip if epoch == start_epoch else 0
        losses, phase_losses, samples, started = [], {}, 0, time.perf_counter()
        bar = tqdm(total=n_steps, initial=done, desc=f"epoch {epoch + 1}/{s.train.epochs}", unit="step",
                   disable=rank != 0 or not s.train.progress, leave=False)
        for i in range(n_steps):
            micro = []
            for _ in range(min(accumulate, n_batches - i * accumulate)):
                batch = next(batches, None)
                shadow = batch is None  # this rank is out of batches: a shadow pass on its last one
                last_batch = last_batch if shadow else batch
                micro.append((last_batch, shadow))
            if i < done:  # resumed mid-epoch: these batches were trained on before the checkpoint
                continue
            if last_batch is None:
                raise InputError(f"rank {rank} has no training batch while another rank has {n_batches}: the "
                                 "train split has fewer rows than processes; use fewer processes or more data")
            if s.run.stop_after_steps is not None and steps_this_call >= s.run.stop_after_steps:
                interrupted = True
                break
            micro = [({k: v.to(device, non_blocking=True) for k, v in b.items()}, shadow) for b, shadow in micro]
            if phases:
                by_phase = adversarial_step(net, model, optimizer, scheduler, micro, data, s, dist, amp)
                loss = sum(by_phase.values()) if by_phase else None
                for p, value in (by_phase or {}).items():
                    phase_losses.setdefault(p, []).append(value)
            else:
                loss = train_step(net, model, optimizer, scheduler, micro, data, s, dist, amp)
            lr_trace.update(np.array([g["lr"] for g in optimizer.param_groups], dtype=np.float64).tobytes())
            step += 1
            steps_this_call += 1
            beat(epoch, step)
            bar.update()
            if loss is not None:
                losses.append(loss)
                samples += sum(data.batch_len(b) for b, shadow in micro if not shadow)
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                if rank == 0 and step % s.train.log_every == 0:
                    sink.log({"train_step_loss": loss, "train_lr": optimizer.param_groups[0]["lr"]}, step)
            if s.train.checkpoint_every and step % s.train.checkpoint_every == 0 and i + 1 < n_steps:
                checkpoint(epoch, i + 1)
        seconds = time.perf_counter() - started  # the step loop only, not evaluation
        bar.close()
        if interrupted:
            break
        evaluating = time.perf_counter()
        dist.average_buffers(model)  # one model on every rank: batch norm statistics from all ranks' batches
        dev = data.evaluate(model, "dev", device, dist=dist)
        train_eval = data.evaluate(model, "train", device, dist=dist)
        eval_seconds = time.perf_counter() - evaluating
        score = data.dev_metric(dev)
        if s.schedule.name == "plateau":
            scheduler.step(score)
        history.append({"epoch": epoch, "loss": dist.mean(float(np.mean(losses)) if losses else 0.0),
                        "lr": optimizer.param_groups[0]["lr"], "epoch_seconds": seconds, "eval_seconds": eval_seconds,
                        "samples": round(dist.mean(samples) * world_size),
                        **{f"loss_{p}": dist.mean(float(np.mean(phase_losses[p])) if phase_losses.get(p) else 0.0)
                           for p in phases},
                        **{f"dev_{k}": v for k, v in dev.items()}, **{f"train_{k}": v for k, v in train_eval.items()}})
        sink.log({k: v for k, v in history[-1].items() if k != "epoch"}, step)
        if score > best:
            best, stale = score, 0
            best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if best_path is not None and rank == 0:
                save_checkpoint(best_path, model=model, epoch=epoch, step=step, config=model_desc,
                                tokenizer_sha256=tok_hash, label_map=label_map,
                                metrics={"dev": dev, "epoch": epoch})
        else:
            stale += 1
        ran += 1
        checkpoint(epoch, 0)
        stopped_by = stop_reason(s.callbacks, EpochEnd(epoch, score, best, stale, rank), dist)
        if stopped_by:
            break
    sink.close()
    dist.average_buffers(model)  # an interrupted epoch was not evaluated (after an evaluation: a no-op)
    digest = weights_digest(model)
    result = {"history": history, "epochs_run": len(history), "world_size": world_size,
              "weights_sha256": digest, "weights_sha256_by_rank": dist.gather(digest),
              "steps_by_rank": [int(x) for x in dist.gather(str(step))], "steps": step,
              "lr_sha256_by_rank": dist.gather(lr_trace.hexdigest()), "interrupted": interrupted,
              "address_by_rank": dist.gather(str(dist.address)),
              "stopped_by": stopped_by, "pruned": stopped_by == "pruned", "best_score": best}
    if best_weights is not None:
        model.load_state_dict(best_weights)  # what the run selected on dev
    if history:
        chosen = max(history, key=lambda h: data.dev_metric({k[4:]: v for k, v in h.items() if k.startswith("dev_")}))
        result["best_epoch"] = chosen["epoch"]
        if not interrupted and data.has_test():
            result["test"] = data.evaluate(model, "test", device, detail=True, dist=dist)
        first = tasks[0]
        if f"train_{first}_accuracy" in chosen:
            d = bias_variance(1 - chosen[f"train_{first}_accuracy"], 1 - chosen[f"dev_{first}_accuracy"],
                              s.train.optimal_error)
            result["diagnosis"] = {"verdict": d.verdict, "advice": d.advice}
    if world_size == 1:
        result["model"] = model
    return result
