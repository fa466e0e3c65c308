"""Peak memory of loading a released folder: writes a random checkpoint in the released layout
at a chosen size, then loads it in a fresh subprocess per dtype and reports the peak RSS above
the post-import baseline, next to the size of the weights in that dtype.

``--family mmembed`` (default): MM-Embed layout (fp16 shards + index json + a local NV-Embed
retriever config), loaded with load_embedder. ``--family qwen2_vl``: a Qwen2-VL folder in the
transformers 5 layout (bf16 shards + index json, GME preset), loaded with
``qwen_presets.load_released`` (``--via load_embedder`` loads it as ``gme-qwen2-vl-2b:FOLDER``).

    python3 scripts/bench_mmembed_load.py --hidden 1024 --layers 8 --dtypes bf16 fp32
    python3 scripts/bench_mmembed_load.py --family qwen2_vl --hidden 1024 --layers 8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, resource
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
import torch
from mmembed.model import load_embedder
import mmembed.model.mmembed_checkpoint  # noqa: F401  (imports done before the baseline)
import transformers, safetensors  # noqa: F401
import mmembed.model.qwen_presets, mmembed.model.qwen_vl, mmembed.model.registry as registry  # noqa: E401
from mmembed.model.embedder import EmbedderConfig
from mmembed.model.qwen_presets import with_folder
if sys.argv[3] != "mmembed":  # transformers' Qwen2-VL modules (~240 MB) before the baseline
    mmembed.model.qwen_vl.backbone_class("qwen2_vl")
base = rss("VmRSS:")
if sys.argv[3] == "load_released":
    cfg = EmbedderConfig(name="gme-qwen2-vl-2b",
                         **with_folder(dict(registry.PRESETS["gme-qwen2-vl-2b"]), sys.argv[1]))
    emb = mmembed.model.qwen_presets.load_released(cfg, device="cpu", dtype=sys.argv[2])
elif sys.argv[3] == "qwen_load_embedder":
    emb = load_embedder("gme-qwen2-vl-2b:" + sys.argv[1], device="cpu", dtype=sys.argv[2])
else:
    emb = load_embedder(sys.argv[1], device="cpu", dtype=sys.argv[2])
n = sum(p.numel() for p in emb.parameters())
print(json.dumps({"params": n, "dtype": str(emb.dtype), "peak_above_base": rss("VmHWM:") - base,
                  "weights_bytes": sum(p.numel() * p.element_size() for p in emb.parameters())}))
"""


def write_random_shards(root: Path, shapes: dict, shard_mb: int, dtype) -> int:
    """Random weights of ``shapes`` (name -> shape) in ``dtype`` safetensors shards of about
    ``shard_mb`` MiB plus the index json; returns the parameter count."""
    import torch
    from safetensors.torch import save_file

    weight_map, part, size, i = {}, {}, 0, 0
    g = torch.Generator().manual_seed(0)

    def flush():
        nonlocal part, size, i
        if part:
            name = f"model-{i + 1:05d}.safetensors"
            save_file(part, str(root / name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(part, name))
            part, size, i = {}, 0, i + 1

    for name, shape in sorted(shapes.items()):
        part[name] = (torch.randn(shape, generator=g) * 0.02).to(dtype)
        size += part[name].numel() * part[name].element_size()
        if size >= shard_mb * 2**20:
            flush()
    flush()
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return sum(int(torch.Size(s).numel()) for s in shapes.values())


def write_folder(root: Path, hidden: int, layers: int, shard_mb: int) -> int:
    """A random release-layout folder; returns the parameter count."""
    import torch

    from mmembed.model.embedder import Embedder, EmbedderConfig
    from mmembed.model.mmembed_checkpoint import load_mmembed_tokenizer, to_checkpoint_name
    from mmembed.model.mmembed_release import release_config

    fixture = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "mmembed_release"
    raw = json.loads((fixture / "MM-Embed" / "config.json").read_text())
    raw["vision_config"].update(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=336,
    )
    raw["image_grid_pinpoints"] = [[336, 672], [672, 336], [672, 672]]
    raw["retriever"] = "nv-embed"
    retr = json.loads(next((fixture / "hub").rglob("config.json")).read_text())
    retr["text_config"].update(
        hidden_size=hidden,
        intermediate_size=hidden * 7 // 2,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 128,
        num_key_value_heads=max(1, hidden // 512),
    )
    retr["latent_attention_config"].update(
        num_latents_value=512,
        num_cross_heads=8,
        hidden_dim=hidden,
        latent_dim=hidden,
        cross_dim_head=hidden,
    )
    root.mkdir(parents=True, exist_ok=True)
    (root / "nv-embed").mkdir(exist_ok=True)
    (root / "nv-embed" / "config.json").write_text(json.dumps(retr))
    (root / "config.json").write_text(json.dumps(raw))
    for f in (fixture / "MM-Embed").glob("*.json"):
        if f.name.startswith(("tokenizer", "special", "added", "preprocessor")):
            (root / f.name).write_text(f.read_text())
    pre = json.loads((root / "preprocessor_config.json").read_text())
    pre["size"], pre["crop_size"] = {"shortest_edge": 336}, {"height": 336, "width": 336}
    (root / "preprocessor_config.json").write_text(json.dumps(pre))
    fields = release_config(root, raw, retr, pre)
    with torch.device("meta"):
        emb = Embedder.build(
            EmbedderConfig(**fields), tokenizer=load_mmembed_tokenizer(root), pretrained=False
        )
    shapes = {to_checkpoint_name(k): tuple(v.shape) for k, v in emb.state_dict().items()}
    return write_random_shards(root, shapes, shard_mb, torch.float16)


def write_qwen_folder(root: Path, hidden: int, layers: int, shard_mb: int) -> int:
    """A random Qwen2-VL folder in the transformers 5 layout (bf16 shards, index json, config,
    the tiny byte-level tokenizer; vision tower 4 blocks of width 1280); returns the parameter
    count."""
    import torch
    from transformers import Qwen2VLConfig

    from mmembed.model.qwen_vl import backbone_class
    from mmembed.testing.tiny_qwen_vl import tiny_qwen_hf_config, tiny_qwen_tokenizer

    tok = tiny_qwen_tokenizer()
    raw = tiny_qwen_hf_config("qwen2_vl", tok, hidden=hidden)
    head = 128
    raw["text_config"].update(
        vocab_size=32000,
        intermediate_size=hidden * 7 // 2,
        num_hidden_layers=layers,
        num_attention_heads=hidden // head,
        num_key_value_heads=max(1, hidden // 512),
    )
    raw["text_config"]["rope_parameters"]["mrope_section"] = [16, 24, 24]
    raw["vision_config"].update(
        depth=4, embed_dim=1280, hidden_size=hidden, num_heads=16, mlp_ratio=4
    )
    cfg = Qwen2VLConfig(**raw)
    with torch.device("meta"):
        module = backbone_class("qwen2_vl")(cfg)
    shapes = {"model." + k: tuple(v.shape) for k, v in module.state_dict().items()}
    root.mkdir(parents=True, exist_ok=True)
    cfg.save_pretrained(root)
    tok.save_pretrained(root)
    return write_random_shards(root, shapes, shard_mb, torch.bfloat16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=["mmembed", "qwen2_vl"], default="mmembed")
    ap.add_argument(
        "--via",
        choices=["load_released", "load_embedder"],
        default="load_released",
        help="qwen2_vl only: the loader measured",
    )
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--shard-mb", type=int, default=200)
    ap.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"])
    ap.add_argument("--folder", type=Path, default=None, help="reuse/keep the written folder")
    args = ap.parse_args()
    tmp = None
    folder = args.folder
    if folder is None:
        tmp = tempfile.TemporaryDirectory()
        folder = Path(tmp.name) / f"{args.family}-random"
    if not (folder / "model.safetensors.index.json").is_file():
        write = write_folder if args.family == "mmembed" else write_qwen_folder
        n = write(folder, args.hidden, args.layers, args.shard_mb)
        kind = "fp16" if args.family == "mmembed" else "bf16"
        print(f"wrote {folder}: {n / 1e6:.1f}M parameters in {kind} shards")
    mode = "mmembed"
    if args.family == "qwen2_vl":
        mode = "load_released" if args.via == "load_released" else "qwen_load_embedder"
    for dt in args.dtypes:
        out = (
            subprocess.run(
                [sys.executable, "-c", CHILD, str(folder), dt, mode],
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        r = json.loads(out)
        print(
            f"{mode} {dt}: {r['params'] / 1e6:.1f}M params, weights {r['weights_bytes'] / 2**20:.0f} MiB,"
            f" peak RSS above baseline {r['peak_above_base'] / 2**20:.0f} MiB"
        )
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
