"""The training loop behind ``mmembed train``: accelerate (one process, DDP or DeepSpeed), the
data plan, plain or cached (GradCache) InfoNCE, AdamW with warmup, checkpoints and exact resume,
a progress bar and a jsonl log. Wires model, data and loss; implements none of them."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmembed.data.atomic import atomic_write_text
from mmembed.data.images import ImageLoadError
from mmembed.model.feature_cache import VisionFeatureCache, attach_feature_cache
from mmembed.train.align import align_train_mode, prepare_align
from mmembed.train.checkpoint import (
    TrainerState,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from mmembed.train.config import ConfigError, TrainConfig
from mmembed.train.distributed import DistInfo, all_reduce_mean
from mmembed.train.features import Prepared, fill_from_cache, prepare, to_device
from mmembed.train.gradcache import grad_cache_step
from mmembed.train.loss import InfoNCELoss, LossOutput
from mmembed.train.sampler import BatchPlan, build_batch, image_paths
from mmembed.train.setup import merge_lora, prepare_model, set_train_mode
from mmembed.train.sources import load_sources

log = logging.getLogger(__name__)
LOG_NAME = "train_log.jsonl"


@dataclass
class TrainResult:
    output_dir: Path
    final_model: Path | None
    steps: int
    last_loss: float | None


def make_accelerator(cfg: TrainConfig) -> Any:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    kwargs: dict[str, Any] = {
        "mixed_precision": precision,
        "kwargs_handlers": [DistributedDataParallelKwargs(find_unused_parameters=True)],
    }
    if cfg.deepspeed:
        try:
            import deepspeed  # noqa: F401
        except ImportError as e:
            raise ImportError(
                "DeepSpeed configs need the 'train' extra: pip install 'mmembed[train]'"
            ) from e
        from accelerate.utils import DeepSpeedPlugin

        kwargs["deepspeed_plugin"] = DeepSpeedPlugin(hf_ds_config=deepspeed_config(cfg))
    if not torch.cuda.is_available():
        kwargs["cpu"] = True
    return Accelerator(**kwargs)


def deepspeed_config(cfg: TrainConfig) -> dict[str, Any]:
    """The DeepSpeed json with its "auto" fields filled from the training config (no dataloader
    is handed to accelerate, so it cannot infer them)."""
    path = Path(cfg.deepspeed)
    try:
        ds = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"deepspeed config {path}: cannot read it ({e})") from None
    world = int(os.environ.get("WORLD_SIZE", 1))
    fill = {
        "train_micro_batch_size_per_gpu": cfg.data.batch_size,
        "train_batch_size": cfg.data.batch_size * world,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": cfg.optim.max_grad_norm or 0.0,
    }
    for k, v in fill.items():
        if ds.get(k, "auto") == "auto":
            ds[k] = v
    return ds


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total: int) -> Any:
    warm, kind = cfg.optim.warmup_steps, cfg.optim.schedule

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if kind == "constant":
            return 1.0
        frac = (step - warm) / max(1, total - warm)
        return (
            max(0.0, 1.0 - frac)
            if kind == "linear"
            else 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(
    model: torch.nn.Module, loss: torch.nn.Module, cfg: TrainConfig
) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    no_decay += [p for p in loss.parameters() if p.requires_grad]
    groups = [
        {"params": decay, "weight_decay": cfg.optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=cfg.optim.lr, betas=tuple(cfg.optim.betas)
    )


class JsonlLog:
    """Append-only jsonl on the main process; on resume, entries past the checkpoint are dropped."""

    def __init__(self, path: Path, *, enabled: bool, resume_step: int | None) -> None:
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        keep: list[str] = []
        if resume_step is not None and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", 0) <= resume_step:
                        keep.append(line)
                except json.JSONDecodeError:
                    break  # a line cut by the kill
        atomic_write_text(path, "".join(k + "\n" for k in keep))

    def write(self, entry: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
                f.flush()


class Prefetcher:
    """Builds the batches of the next ``workers`` steps in background threads (tokenising and
    image decoding overlap the model's step); ``workers=0`` builds each batch when asked."""

    def __init__(self, fn: Any, steps: range, workers: int) -> None:
        self.fn, self.steps, self.workers = fn, steps, workers
        self.pending: dict[int, Any] = {}
        self.pool = None
        if workers > 0:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mmembed-batch")

    def get(self, step: int) -> Any:
        if self.pool is None:
            return self.fn(step)
        for s in self.steps[self.steps.index(step) : self.steps.index(step) + self.workers + 1]:
            if s not in self.pending:
                self.pending[s] = self.pool.submit(self.fn, s)
        return self.pending.pop(step).result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def average_loss_grads(loss_fn: torch.nn.Module, dist: DistInfo) -> None:
    """Average the gradients of the loss's own parameters (a learnable temperature) over
    processes, as DDP does for the model's; a no-op on one process."""
    if dist.world_size == 1:
        return
    import torch.distributed as tdist

    for p in loss_fn.parameters():
        if p.grad is not None:
            tdist.all_reduce(p.grad)
            p.grad /= dist.world_size


class MultiEncode(torch.nn.Module):
    """``forward(*batches) -> (emb, ...)``: queries and candidates in ONE forward call, so DDP sees
    one forward per backward (two separate calls would confuse its unused-parameter search)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *batches: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(b) for b in batches)  # each (n, D)


def run_step(
    model: Any, loss_fn: InfoNCELoss, prep: Prepared, *, grad_cache: bool, accelerator: Any
) -> LossOutput:
    """Forward + backward of one batch (gradients accumulate in the parameters). ``model`` is
    the (wrapped) MultiEncode."""
    meta = prep.meta
    if grad_cache:

        def sync(last: bool) -> Any:
            return nullcontext() if last else accelerator.no_sync(model)

        return grad_cache_step(
            lambda ch: model(ch)[0],
            prep.query_chunks,
            prep.cand_chunks,
            lambda q, c: loss_fn(q, c, meta),
            backward=accelerator.backward,
            sync_context=sync,
        )
    q, c = model(prep.query_chunks[0], prep.cand_chunks[0])  # (B, D), (N, D)
    out = loss_fn(q, c, meta)
    accelerator.backward(out.loss)
    return out


def train(cfg: TrainConfig) -> TrainResult:
    """Run (or resume) the training described by ``cfg``."""
    from mmembed.model import load_embedder

    if cfg.model.cache_vision_features and not cfg.model.freeze_vision:
        raise ConfigError(
            "model.cache_vision_features needs model.freeze_vision: true (a trained tower changes its features)"
        )
    if cfg.deepspeed and cfg.loss.grad_cache:
        raise ConfigError("loss.grad_cache is not supported under DeepSpeed; turn one of them off")
    if cfg.deepspeed and cfg.loss.learnable_temperature:
        raise ConfigError(
            "loss.learnable_temperature is not supported under DeepSpeed (the temperature "
            "lives outside the engine's model); use a fixed temperature"
        )
    accelerator = make_accelerator(cfg)
    dist = DistInfo(accelerator.process_index, accelerator.num_processes)
    out_dir = Path(cfg.output_dir)
    ckpt_root = out_dir / "checkpoints"
    torch.manual_seed(cfg.seed + dist.rank)

    sources = load_sources(cfg.data.sources, strict=cfg.data.strict)
    plan = BatchPlan(
        sources,
        batch_size=cfg.data.batch_size * dist.world_size,
        hard_negatives=cfg.data.hard_negatives,
        one_task_per_batch=cfg.data.one_task_per_batch,
        seed=cfg.seed,
        steps_per_epoch=cfg.data.steps_per_epoch,
    )
    total = cfg.max_steps or cfg.epochs * plan.steps_per_epoch

    model = load_embedder(cfg.model.name, device="cpu", dtype=getattr(torch, cfg.model.dtype))
    if cfg.stage == "align":
        prepare_align(model, cfg.model)
    else:
        prepare_model(model, cfg.model)
    if cfg.model.dtype != "float32":
        if accelerator.mixed_precision not in ("bf16", "fp16"):
            raise ConfigError(
                f"model.dtype={cfg.model.dtype} needs mixed precision (precision: bf16 or fp16, or auto "
                "on a GPU): the float32 trainable weights then meet half-precision activations under autocast"
            )
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()  # adapters, projector, pooler train in float32
    loss_fn = InfoNCELoss(
        cfg.loss.temperature, learnable=cfg.loss.learnable_temperature, dist_info=dist
    )
    optimizer = make_optimizer(model, loss_fn, cfg)
    scheduler = make_scheduler(optimizer, cfg, total)
    # the scheduler stays outside accelerate (which would step it once per process per step)
    wrapped, optimizer = accelerator.prepare(MultiEncode(model), optimizer)
    loss_fn.to(accelerator.device)
    core = accelerator.unwrap_model(wrapped).model  # the Embedder

    start = TrainerState(0, 0, 0, cfg.seed, dist.world_size)
    resume_from = latest_checkpoint(ckpt_root) if cfg.resume else None
    if resume_from is not None:
        start = load_checkpoint(
            resume_from,
            model=core,
            loss=loss_fn,
            optimizer=optimizer,
            scheduler=scheduler,
            rank=dist.rank,
            world_size=dist.world_size,
            engine=accelerator if cfg.deepspeed else None,
        )
        log.info("resumed from %s (step %d)", resume_from, start.global_step)
    if dist.is_main:
        cfg.save(out_dir / "config.yaml")
    jlog = JsonlLog(
        out_dir / LOG_NAME,
        enabled=dist.is_main,
        resume_step=start.global_step if resume_from else 0,
    )
    cache = VisionFeatureCache(
        core, getattr(torch, cfg.model.vision_cache_dtype), cfg.model.feature_cache_dir
    )
    if cache.folder is not None:
        attach_feature_cache(core, cache)  # the backbone's own vision_features use the folder
    if not cfg.model.cache_vision_features:
        cache = None  # batches carry pixels
    chunk = cfg.loss.chunk_size if cfg.loss.grad_cache else None

    from tqdm.auto import tqdm

    bar = tqdm(
        total=total,
        initial=start.global_step,
        disable=not (cfg.progress and dist.is_main),
        desc="train",
    )
    last_loss = None
    t0 = time.perf_counter()

    bad_images: set[str] = set()

    def make_batch(gstep: int) -> Prepared:  # a pure function of the step: safe to prefetch
        epoch, in_epoch = divmod(gstep, plan.steps_per_epoch)
        planned = BatchPlan.rank_slice(plan.batch(epoch, in_epoch), dist.rank, dist.world_size)
        while True:  # an unreadable image drops the examples that need it, and the batch is rebuilt
            keep = (
                [p for p in planned if not image_paths(p, sources) & bad_images]
                if bad_images
                else planned
            )
            if not keep:
                raise RuntimeError(
                    f"step {gstep}: every example of the batch needs an unreadable image"
                )
            batch = build_batch(
                keep,
                sources,
                seed=cfg.seed,
                epoch=epoch,
                use_instructions=cfg.data.use_instructions,
            )
            try:
                prep = prepare(core, batch, chunk_size=chunk, cached=cache is not None)
                if cache is not None:
                    for ch in (*prep.query_chunks, *prep.cand_chunks):
                        fill_from_cache(ch, cache, core)
                return prep
            except ImageLoadError as e:
                if cfg.data.strict or e.path in bad_images:
                    raise
                bad_images.add(e.path)
                log.warning("skipping every example that needs %s (step %d): %s", e.path, gstep, e)

    # once, before any batch is prefetched: a worker thread may run the frozen vision tower for
    # the feature cache, and must never see it flip to train mode
    if cfg.stage == "align":
        align_train_mode(core)
    else:
        set_train_mode(core, cfg.model)
    prefetch = Prefetcher(make_batch, range(start.global_step, total), cfg.data.num_workers)
    try:
        for gstep in range(start.global_step, total):
            epoch = gstep // plan.steps_per_epoch
            tic = time.perf_counter()
            prep = prefetch.get(gstep)
            for ch in (*prep.query_chunks, *prep.cand_chunks):
                ch.update(to_device(ch, accelerator.device))
            out = run_step(
                wrapped, loss_fn, prep, grad_cache=cfg.loss.grad_cache, accelerator=accelerator
            )
            average_loss_grads(loss_fn, dist)  # DDP averages the model's gradients, not the loss's
            grad_norm = None
            if cfg.optim.max_grad_norm:
                params = [p for g in optimizer.param_groups for p in g["params"]]
                norm = accelerator.clip_grad_norm_(params, cfg.optim.max_grad_norm)
                grad_norm = float(norm) if norm is not None else None  # DeepSpeed clips inside
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            last_loss = all_reduce_mean(out.loss.item(), dist, accelerator.device)
            acc = all_reduce_mean(out.accuracy, dist, accelerator.device)
            dt = time.perf_counter() - tic
            entry = {
                "step": gstep + 1,
                "epoch": epoch,
                "loss": last_loss,
                "accuracy": acc,
                "lr": scheduler.get_last_lr()[0],
                "temperature": loss_fn.temperature,
                "pairs_per_s": prep.n_queries * dist.world_size / dt,
                "grad_norm": grad_norm,
                "elapsed_s": time.perf_counter() - t0,
            }
            if (gstep + 1) % max(1, cfg.log_every) == 0 or gstep + 1 == total:
                jlog.write(entry)
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.4f}", acc=f"{acc:.2f}", lr=f"{entry['lr']:.2e}")
            if cfg.save_every and (gstep + 1) % cfg.save_every == 0 and gstep + 1 < total:
                nxt_epoch, nxt_step = divmod(gstep + 1, plan.steps_per_epoch)
                save_checkpoint(
                    ckpt_root,
                    TrainerState(gstep + 1, nxt_epoch, nxt_step, cfg.seed, dist.world_size),
                    model=core,
                    loss=loss_fn,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    config=cfg,
                    rank=dist.rank,
                    barrier=accelerator.wait_for_everyone,
                    keep_last=cfg.keep_last,
                    engine=accelerator if cfg.deepspeed else None,
                )
    finally:
        prefetch.close()
        bar.close()
    final = None
    accelerator.wait_for_everyone()
    if dist.is_main:
        final = out_dir / "final"
        core.eval()
        merge_lora(core)
        core.save_pretrained(final)
        cfg.save(final / "train_config.yaml")
        log.info("saved %s", final)
    accelerator.wait_for_everyone()
    return TrainResult(out_dir, final, total, last_loss)
