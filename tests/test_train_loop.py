"""Training with a tiny real Embedder: overfitting a fixed batch, GradCache == plain on the model,
LoRA setup and merge, cached vision features == computed, train -> mine -> train end to end,
and exact resume after SIGKILL (a real subprocess running `mmembed train`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from train_fixtures import config_dict, make_tree, write_model

from mmembed.data.mbeir import read_queries
from mmembed.model.feature_cache import VisionFeatureCache
from mmembed.train.config import ModelConfig, from_dict, load_config
from mmembed.train.features import fill_from_cache, prepare
from mmembed.train.gradcache import grad_cache_step
from mmembed.train.loss import InfoNCELoss
from mmembed.train.sampler import BatchPlan, build_batch
from mmembed.train.setup import merge_lora, prepare_model, set_train_mode
from mmembed.train.sources import load_sources
from mmembed.train.trainer import LOG_NAME, train

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("train")
    return make_tree(base / "mbeir"), write_model(base / "model")


def _batch(root: Path, size: int = 8, k: int = 0, seed: int = 0):
    from mmembed.train.config import SourceConfig

    src = load_sources(
        [
            SourceConfig(
                name="coco",
                root=str(root),
                queries=["query/train/*.jsonl"],
                pool=["cand_pool/global/mbeir_union_train_cand_pool.jsonl"],
            )
        ]
    )
    plan = BatchPlan(src, batch_size=size, hard_negatives=k, seed=seed)
    return build_batch(plan.batch(0, 0), src, seed=seed, epoch=0)


def test_tiny_model_overfits_a_fixed_batch(tree):
    from mmembed.testing.tiny_embedders import tiny_embedder

    root, _ = tree
    model = tiny_embedder(1)
    prepare_model(model, ModelConfig(freeze_vision=False))
    batch = _batch(root)
    prep = prepare(model, batch, chunk_size=None, cached=False)
    loss_fn = InfoNCELoss(0.05)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(25):
        model.train()
        out = loss_fn(model(prep.query_chunks[0]), model(prep.cand_chunks[0]), prep.meta)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(out.loss.item())
    assert losses[-1] < 0.2 * losses[0], losses
    assert out.accuracy == 1.0


def test_grad_cache_matches_plain_on_the_embedder(tree):
    from mmembed.testing.tiny_embedders import tiny_embedder

    root, _ = tree
    batch = _batch(root, size=8)
    results = []
    for cached in (False, True):
        model = tiny_embedder(2)
        prepare_model(model, ModelConfig(freeze_vision=False))
        loss_fn = InfoNCELoss(0.05, learnable=True)
        prep = prepare(model, batch, chunk_size=3 if cached else None, cached=False)
        if cached:
            assert len(prep.query_chunks) == 3 and len(prep.cand_chunks) == 3
            out = grad_cache_step(
                model,
                prep.query_chunks,
                prep.cand_chunks,
                lambda q, c, f=loss_fn, m=prep.meta: f(q, c, m),
            )
        else:
            out = loss_fn(model(prep.query_chunks[0]), model(prep.cand_chunks[0]), prep.meta)
            out.loss.backward()
        grads = {
            n: p.grad.clone()
            for n, p in [*model.named_parameters(), *loss_fn.named_parameters()]
            if p.grad is not None
        }
        results.append((out.loss.item(), grads))
    (lp, gp), (lc, gc) = results
    assert lc == pytest.approx(lp, abs=1e-5)
    assert gp.keys() == gc.keys() and len(gp) > 10
    for n in gp:
        assert torch.allclose(gp[n], gc[n], atol=1e-5, rtol=1e-4), n


def test_lora_setup_trains_adapters_projector_pooler_and_merges(tree):
    from mmembed.testing.tiny_embedders import tiny_embedder

    root, _ = tree
    model = tiny_embedder(3)
    cfg = ModelConfig(
        lora=from_dict(
            type(ModelConfig().lora), {"enabled": True, "r": 4, "targets": ["query", "value"]}
        )
    )
    report = prepare_model(model, cfg)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert report.lora_modules == 4  # query + value in 2 layers
    assert any("lora_A" in n for n in trainable)
    assert any(n.startswith("backbone.multi_modal_projector.") for n in trainable)
    assert any(n.startswith("pooler.") for n in trainable)
    assert not any(n.startswith("backbone.vision_tower.") for n in trainable)
    assert not any(n.startswith("backbone.language_model.") and "lora_" not in n for n in trainable)
    set_train_mode(model, cfg)
    assert not model.backbone.vision_tower.training and model.backbone.language_model.training
    # one real step so the adapters are non-zero, then merging must not change the embeddings
    batch = _batch(root, size=4)
    prep = prepare(model, batch, chunk_size=None, cached=False)
    out = InfoNCELoss(0.05)(model(prep.query_chunks[0]), model(prep.cand_chunks[0]), prep.meta)
    out.loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5).step()
    model.eval()
    with torch.no_grad():
        before = model(prep.query_chunks[0])
        merge_lora(model)
        after = model(prep.query_chunks[0])
    assert not any("lora_" in n for n, _ in model.named_parameters())
    assert torch.allclose(before, after, atol=1e-5)
    with pytest.raises(ValueError, match="match no Linear module"):
        prepare_model(
            tiny_embedder(3),
            ModelConfig(lora=from_dict(type(cfg.lora), {"enabled": True, "targets": ["nope"]})),
        )


def test_cached_vision_features_equal_computed(tree):
    from mmembed.testing.tiny_embedders import tiny_embedder

    root, _ = tree
    batch = _batch(root, size=8)
    model = tiny_embedder(4)
    model.eval()
    cache = VisionFeatureCache(model, torch.float32)
    plain = prepare(model, batch, chunk_size=None, cached=False)
    cached = prepare(model, batch, chunk_size=None, cached=True)
    with torch.no_grad():
        for a, b in zip(
            plain.query_chunks + plain.cand_chunks,
            cached.query_chunks + cached.cand_chunks,
            strict=True,
        ):
            fill_from_cache(b, cache, model)
            assert "pixel_values" not in b
            assert torch.allclose(model(a), model(b), atol=1e-6)
    n_query_images = sum(it.image is not None for it in batch.query_items)
    assert 0 < n_query_images < 8
    assert cache.misses == 8 and cache.hits == 0  # every image of the batch encoded once
    fill_from_cache(
        prepare(model, batch, chunk_size=None, cached=True).query_chunks[0], cache, model
    )
    assert cache.hits == n_query_images and cache.misses == 8


def _read_log(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_train_mine_train_end_to_end(tree, tmp_path):
    from mmembed.model import load_embedder
    from mmembed.train.mine import MiningConfig
    from mmembed.train.mine_files import mine_files

    root, model_dir = tree
    path = tmp_path / "random.yaml"
    path.write_text(
        yaml.safe_dump(config_dict(root, model_dir, tmp_path / "stage1", epochs=3, save_every=4))
    )
    r1 = train(load_config(path))
    assert r1.steps == 12 and (tmp_path / "stage1/final/config.json").is_file()
    assert (tmp_path / "stage1/config.yaml").is_file() and (
        tmp_path / "stage1/final/train_config.yaml"
    ).is_file()
    ckpts = sorted(p.name for p in (tmp_path / "stage1/checkpoints").iterdir())
    assert (
        ckpts == ["step-00000004", "step-00000008"]
        and (tmp_path / "stage1/checkpoints/step-00000008/config.yaml").is_file()
    )
    log1 = _read_log(tmp_path / "stage1" / LOG_NAME)
    assert [e["step"] for e in log1] == list(range(1, 13)) and {"loss", "lr", "accuracy"} <= set(
        log1[0]
    )

    trained = load_embedder(str(r1.final_model))
    written, stats = mine_files(
        root,
        ["query/train/*.jsonl"],
        ["cand_pool/global/mbeir_union_train_cand_pool.jsonl"],
        tmp_path / "mined",
        model=trained,
        show_progress=False,
        cfg=MiningConfig(top_k=32, rank_threshold=8, positive_ratio=0.95, max_negatives=6),
    )
    mined = [q for p in written for q in read_queries(p)]
    assert all(not set(q.neg_dids) & set(q.pos_dids) for q in mined)
    assert sum(len(q.neg_dids) for q in mined) > 16

    hard = config_dict(root, model_dir, tmp_path / "stage2", epochs=1, save_every=0)
    hard["data"]["hard_negatives"] = 2
    hard["data"]["sources"][0]["queries"] = [str(p) for p in written]
    hard["loss"]["grad_cache"] = True
    hard["loss"]["chunk_size"] = 3
    path2 = tmp_path / "hard.yaml"
    path2.write_text(yaml.safe_dump(hard))
    r2 = train(load_config(path2))
    assert r2.steps == 4 and r2.last_loss is not None and r2.final_model.is_dir()
    resolved = yaml.safe_load((tmp_path / "stage2/config.yaml").read_text())
    assert resolved["data"]["hard_negatives"] == 2 and resolved["loss"]["grad_cache"] is True


def test_resume_after_sigkill_matches_uninterrupted_run(tree, tmp_path):
    root, model_dir = tree
    # 20 warmup steps then linear decay: the checkpoint (step 8 or 16) is mid-warmup, so the
    # resumed run's learning rates are not constant and must be restored, not recomputed from 0
    common = {"epochs": 12, "save_every": 8, "keep_last": 2}
    common |= {"optim__warmup_steps": 20, "optim__schedule": "linear"}
    # batches prefetched by 2 threads in the killed and resumed runs; built inline in the reference
    killed_cfg = tmp_path / "killed.yaml"
    killed_cfg.write_text(
        yaml.safe_dump(config_dict(root, model_dir, tmp_path / "killed", **common))
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "mmembed", "train", str(killed_cfg)]
    log = tmp_path / "killed" / LOG_NAME
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            if (
                log.is_file()
                and (steps := [e["step"] for e in _read_log(log) if "step" in e])
                and max(steps) >= 11
            ):
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    logged = _read_log(log)
    assert 11 <= logged[-1]["step"] < 48  # killed mid-run, past the step-8 checkpoint
    ckpts = sorted(
        p.name for p in (tmp_path / "killed/checkpoints").iterdir() if not p.name.endswith(".tmp")
    )
    assert ckpts[-1] in ("step-00000008", "step-00000016")
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    resumed = _read_log(log)
    assert [e["step"] for e in resumed] == list(
        range(1, 49)
    )  # entries after the checkpoint were replaced

    torch.set_num_threads(1)
    ref = load_config(
        killed_cfg, [f"output_dir={tmp_path / 'ref'}", "save_every=0", "data.num_workers=0"]
    )
    train(ref)
    reference = _read_log(tmp_path / "ref" / LOG_NAME)
    for a, b in zip(resumed, reference, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6), a["step"]
        assert a["lr"] == b["lr"]
    # logged after step s: the rate of step s + 1 = 1e-3 * (s + 1) / 20 in warmup, then linear
    want = [1e-3 * ((s + 1) / 20 if s < 20 else 1 - (s - 20) / 28) for s in range(1, 49)]
    assert [e["lr"] for e in resumed] == pytest.approx(want, rel=1e-9, abs=1e-15)


@pytest.mark.slow  # three fresh interpreters (torchrun x2 + one): ~30 s alone, minutes on a busy box
def test_two_processes_match_one_process_with_the_global_batch(tree, tmp_path):
    """2 CPU processes (torchrun + gloo, DDP) at batch 2 each == 1 process at batch 4: candidates
    are gathered with gradient, each rank takes its slice of the same global plan."""
    root, model_dir = tree
    logs = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for name, bs, launcher in (
        ("two", 2, [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]),
        ("one", 4, [sys.executable]),
    ):
        cfg = config_dict(root, model_dir, tmp_path / name, epochs=2)
        cfg["data"]["batch_size"] = bs
        cfg["loss"]["learnable_temperature"] = True  # its gradient must be averaged over processes
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
        res = subprocess.run(
            [*launcher, "-m", "mmembed", "train", str(tmp_path / f"{name}.yaml")],
            env=env,
            cwd=ROOT,
            capture_output=True,
            timeout=300,
        )
        assert res.returncode == 0, res.stderr.decode()[-3000:]
        logs[name] = _read_log(tmp_path / name / LOG_NAME)
    assert len(logs["one"]) == len(logs["two"]) == 8
    for a, b in zip(logs["one"], logs["two"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5), a["step"]
        assert a["accuracy"] == b["accuracy"]
        assert a["temperature"] == pytest.approx(b["temperature"], rel=1e-5)
    assert logs["one"][-1]["temperature"] != logs["one"][0]["temperature"]  # it did learn


def test_gradient_checkpointing_keeps_gradients(tree):
    from mmembed.testing.tiny_embedders import tiny_embedder

    root, _ = tree
    batch = _batch(root, size=4)
    grads = []
    for ckpt in (False, True):
        model = tiny_embedder(5)
        cfg = ModelConfig(freeze_vision=True, gradient_checkpointing=ckpt)
        prepare_model(model, cfg)
        set_train_mode(model, cfg)
        prep = prepare(model, batch, chunk_size=None, cached=False)
        out = InfoNCELoss(0.05)(model(prep.query_chunks[0]), model(prep.cand_chunks[0]), prep.meta)
        out.loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        if ckpt:
            lm = model.backbone.language_model
            assert getattr(lm, "is_activation_checkpointing", None) or lm.is_gradient_checkpointing
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    assert not any(n.startswith("backbone.vision_tower.") for n in grads[0])
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-6), n


def test_an_unreadable_image_skips_its_examples_not_the_run(tmp_path, caplog):
    root = make_tree(tmp_path / "m")
    model_dir = write_model(tmp_path / "model")
    (root / "images/blue_circle.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    cfg = config_dict(root, model_dir, tmp_path / "run", epochs=1)
    cfg["model"].update({"freeze_vision": True, "cache_vision_features": True})
    cfg["data"]["num_workers"] = 1
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = train(load_config(path))
    assert result.steps == 4 and result.final_model.is_dir()
    assert "blue_circle.png" in caplog.text and "skipping every example" in caplog.text
    strict = load_config(path, ["data.strict=true", f"output_dir={tmp_path / 'strict'}"])
    with pytest.raises(Exception, match="blue_circle.png"):
        train(strict)
