"""Tiny M-BEIR trees and configs for the training tests (written with the project's writers;
images are small PNGs drawn with Pillow)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from mmembed.data.instructions import InstructionRow, InstructionTable, write_instructions
from mmembed.data.mbeir import Layout, write_pool, write_qrels, write_queries
from mmembed.data.records import Candidate, Modality, Query

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
RGB = {
    "red": (220, 30, 30),
    "green": (30, 180, 60),
    "blue": (30, 60, 220),
    "yellow": (230, 220, 40),
    "purple": (140, 40, 160),
    "orange": (240, 140, 20),
    "black": (10, 10, 10),
    "white": (245, 245, 245),
}
SHAPES = ["square", "circle"]


def draw(path: Path, colour: str, shape: str) -> None:
    img = Image.new("RGB", (16, 16), (128, 128, 128))
    d = ImageDraw.Draw(img)
    if shape == "square":
        d.rectangle([3, 3, 12, 12], fill=RGB[colour])
    else:
        d.ellipse([2, 2, 13, 13], fill=RGB[colour])
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def make_tree(root: Path) -> Path:
    """16 images + 16 captions (dataset 9); 16 training queries: 8 text->image (task 0) and
    8 image->text (task 3); local pools and the union train pool; instructions."""
    lay = Layout(root)
    images, texts = [], []
    n = 0
    for colour in COLOURS:
        for shape in SHAPES:
            rel = f"images/{colour}_{shape}.png"
            draw(root / rel, colour, shape)
            images.append(Candidate(f"9:{n}", None, rel, Modality.IMAGE))
            texts.append(
                Candidate(f"9:{100 + n}", f"a {colour} {shape} on grey", None, Modality.TEXT)
            )
            n += 1
    queries = []
    for i in range(16):
        colour, shape = COLOURS[i // 2], SHAPES[i % 2]
        if i % 2 == 0:
            queries.append(
                Query(f"9:{i}", f"{colour} {shape}", None, Modality.TEXT, 0, [images[i].did])
            )
        else:
            queries.append(
                Query(f"9:{i}", None, images[i].image_path, Modality.IMAGE, 3, [texts[i].did])
            )
    t0 = [q for q in queries if q.task_id == 0]
    t3 = [q for q in queries if q.task_id == 3]
    write_queries(lay.query_file("MSCOCO", 0, "train"), t0)
    write_queries(lay.query_file("MSCOCO", 3, "train"), t3)
    write_qrels(lay.qrels_file("MSCOCO", 0, "train"), t0)
    write_qrels(lay.qrels_file("MSCOCO", 3, "train"), t3)
    write_pool(lay.pool_file("MSCOCO", 0), images)
    write_pool(lay.pool_file("MSCOCO", 3), texts)
    write_pool(lay.global_pool_file("train"), images + texts)
    write_instructions(
        lay.instructions_file,
        InstructionTable(
            [
                InstructionRow(
                    "text",
                    "image",
                    "MSCOCO",
                    9,
                    ["Find the picture this caption describes.", "Retrieve the image."],
                ),
                InstructionRow(
                    "image",
                    "text",
                    "MSCOCO",
                    9,
                    ["Find a caption for this picture.", "Describe the image."],
                ),
            ]
        ),
    )
    return root


def write_model(path: Path, kind: str = "composed", seed: int = 0) -> Path:
    from mmembed.testing.tiny_embedders import tiny_embedder

    tiny_embedder(seed=seed, kind=kind).save_pretrained(path)
    return path


def config_dict(root: Path, model: Path, out: Path, **over) -> dict:
    cfg = {
        "output_dir": str(out),
        "seed": 7,
        "epochs": 2,
        "save_every": 0,
        "progress": False,
        "model": {"name": str(model), "freeze_vision": False},
        "data": {
            "batch_size": 4,
            "sources": [
                {
                    "name": "coco",
                    "kind": "mbeir",
                    "root": str(root),
                    "queries": ["query/train/mbeir_mscoco_task*_train.jsonl"],
                    "pool": ["cand_pool/global/mbeir_union_train_cand_pool.jsonl"],
                }
            ],
        },
        "loss": {"temperature": 0.05},
        "optim": {"lr": 1e-3, "warmup_steps": 0, "schedule": "constant"},
    }
    for k, v in over.items():
        node = cfg
        parts = k.split("__")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return cfg
