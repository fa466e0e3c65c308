"""Encode speed of the zoo's CPU-sized models on this machine, the way `mmembed index` meets a
photo folder: camera-sized JPEGs (decoded, EXIF-rotated, resized by the model's own collate),
emoji-sized PNGs, and short text queries. Speed does not depend on the weights, so models whose
weights cannot be downloaded here (open_clip towers for CLIP_SF) run at random init with the real
architecture; mmembed-mini runs with its shipped weights.

Usage: python3 scripts/bench_zoo_cpu.py [--models mmembed-mini,clip-sf:ViT-B-32:random,clip-sf:ViT-L-14:random]
           [--photos 24] [--texts 96] [--threads 2] [--json OUT]
docs/zoo.md quotes its output; the load average is printed because this machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUERIES = [
    "a cat asleep on a sofa",
    "my daughter's birthday cake",
    "snow on the mountains at sunrise",
    "receipt from the hardware store",
    "a red bicycle leaning on a wall",
    "the beach at low tide",
]


def write_photos(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    """Camera-like JPEGs (noise-textured gradients at ``size`` with EXIF Make/Model/Orientation),
    quality 90: decoding them costs what decoding a phone photo of that size costs."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    w, h = size
    out = []
    for i in range(n):
        base = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
        img = base * np.array([1.0, 0.6 + 0.01 * i, 0.3], dtype=np.float32)
        img = img + rng.normal(0, 25, (h, w, 3))
        exif = Image.Exif()
        exif[271], exif[272], exif[274] = "Camera", "Model", 1
        p = folder / f"IMG_{i:04d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
            p, "JPEG", quality=90, exif=exif.tobytes()
        )
        out.append(p)
    return out


def write_emoji(folder: Path, n: int) -> list[Path]:
    from PIL import Image, ImageDraw

    out = []
    for i in range(n):
        img = Image.new("RGBA", (136, 128), (255, 255, 255, 0))
        ImageDraw.Draw(img).ellipse([8, 8, 120, 120], fill=(240, 200 - i % 100, 40, 255))
        p = folder / f"emoji_{i:04d}.png"
        img.save(p)
        out.append(p)
    return out


def gme_2b_shape():
    """GME-Qwen2-VL-2B's architecture and prompt/resize settings (the gme-qwen2-vl-2b preset) at
    random init, with the tiny byte tokenizer (vocabulary size changes only the embedding lookup):
    Qwen2-VL-2B text model 28 x 1536 (12 heads, 2 KV), vision tower 32 x 1280 with 2x2 merging."""
    import copy  # noqa: I001 (qwen_* are first-party once the Qwen-VL backbone is merged)

    import torch
    from transformers.initialization import no_init_weights

    from mmembed.model.embedder import Embedder, EmbedderConfig
    from mmembed.model.qwen_presets import QWEN_PRESETS
    from mmembed.testing.tiny_qwen_vl import tiny_qwen_hf_config, tiny_qwen_tokenizer

    tok = tiny_qwen_tokenizer()
    hf = tiny_qwen_hf_config("qwen2_vl", tok)
    hf["text_config"].update(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        max_position_embeddings=32768,
    )
    hf["text_config"]["rope_parameters"]["mrope_section"] = [16, 24, 24]
    hf["vision_config"].update(
        depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4
    )
    raw = copy.deepcopy(QWEN_PRESETS["gme-qwen2-vl-2b"])
    backbone = {k: v for k, v in raw["backbone"].items() if k != "source"} | {"hf_config": hf}
    cfg = EmbedderConfig(
        name="gme-qwen2-vl-2b-shape", backbone=backbone, pooler=raw["pooler"], prompt=raw["prompt"]
    )
    with no_init_weights():
        emb = Embedder.build(cfg, tokenizer=tok, pretrained=False)
    with torch.no_grad():
        for name, p in emb.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.02)
            elif "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
    return emb.eval()


# Architectures timed at random init without a hub (need the Qwen-VL backbone).
SHAPES = {"shape:gme-qwen2-vl-2b": gme_2b_shape}


def bench_model(spec: str, photos: list[Path], emoji: list[Path], texts: list[str]) -> dict:
    import torch

    from mmembed.data.records import Item
    from mmembed.model import load_embedder

    t = time.perf_counter()
    model = SHAPES[spec]() if spec in SHAPES else load_embedder(spec, device="cpu")
    load_s = time.perf_counter() - t
    params = sum(p.numel() for p in model.parameters())
    row = {"model": spec, "params_m": params / 1e6, "dim": int(model.dim), "load_s": load_s}
    model.encode_candidates([Item(None, emoji[0])], show_progress=False)  # warm-up (cheap)
    with torch.inference_mode():
        for label, items, query in (
            ("photos_per_s", [Item(None, p) for p in photos], False),
            ("emoji_per_s", [Item(None, p) for p in emoji], False),
            ("texts_per_s", [Item(q, None) for q in texts], True),
        ):
            t, c = time.perf_counter(), time.process_time()
            if query:
                model.encode_queries(items, batch_size=32, show_progress=False)
            else:
                model.encode_candidates(items, batch_size=16, show_progress=False)
            row[label] = len(items) / (time.perf_counter() - t)  # wall clock
            row[label.replace("_per_s", "_per_cpu_s")] = len(items) / (time.process_time() - c)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # ":random" = the architecture at random init (load_embedder's clip-sf syntax since the
    # fidelity work; before it, a bare "clip-sf:ARCH" was random init and the numbers in
    # docs/zoo.md were measured that way)
    ap.add_argument(
        "--models", default="mmembed-mini,clip-sf:ViT-B-32:random,clip-sf:ViT-L-14:random"
    )
    ap.add_argument("--photos", type=int, default=24)
    ap.add_argument("--photo-size", default="4032x3024", help="camera JPEG size, WxH")
    ap.add_argument("--texts", type=int, default=96)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: per-core numbers)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    w, h = (int(x) for x in args.photo_size.lower().split("x"))
    texts = [QUERIES[i % len(QUERIES)] + f" ({i})" for i in range(args.texts)]
    result = {
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "photo_size": [w, h],
        "loadavg_start": os.getloadavg(),
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        photos = write_photos(Path(tmp), args.photos, (w, h))
        emoji = write_emoji(Path(tmp), args.photos)
        for spec in args.models.split(","):
            row = bench_model(spec.strip(), photos, emoji, texts)
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
    result["loadavg_end"] = os.getloadavg()
    print(
        f"load average {result['loadavg_start']} -> {result['loadavg_end']}, {result['cpus']} CPUs"
    )
    print(
        "items per CPU-second (all threads of the process; = items/s on one idle core), wall items/s:"
    )
    print("| model | params | dim | photos | emoji-size images | texts |")
    print("|---|---|---|---|---|---|")
    for r in result["rows"]:
        cells = [
            f"{r[k + '_per_cpu_s']:.2f} ({r[k + '_per_s']:.2f} wall)"
            for k in ("photos", "emoji", "texts")
        ]
        print(f"| {r['model']} | {r['params_m']:.0f} M | {r['dim']} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
