"""Image–caption pairs for the ``align`` training stage (docs/mmembed_mini.md): every image the
train split of an offline build shows (both art styles, skin-tone variants, edit sources), paired
with every caption the packaged assets hold for its emoji (CLDR names in every language, English
CLDR keywords), written as an M-BEIR-format folder that ``mmembed train`` reads as a plain
``mbeir`` source: one image-only query per image, its captions as text candidates and positives.
Only images the train split already uses are read, so no val or test image is ever aligned,
and no caption in a language the build holds out (hold_out.json).
Knows the build's file layout and the emoji assets; knows nothing of models or training."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from mmembed.data.mbeir import Layout, read_pool, read_queries
from mmembed.data.offline.holdout import FILE as HOLD_OUT_FILE

ALIGN_DATASET = 13  # dataset id of the pairs, clear of the build's 10-12 and M-BEIR's 0-9
IMAGE_TEXT_TASK = 3  # image -> text
QUERY_FILE = "query/train/mbeir_align_task3_train.jsonl"
POOL_FILE = "cand_pool/mbeir_align_cand_pool.jsonl"
_IMAGE = re.compile(r"^images/(noto|gemojione)/([0-9a-f-]+)\.png$")


def train_images(data: Path) -> list[str]:
    """Relative paths of every image that the train split's queries or train pool refer to."""
    layout = Layout(data)
    paths: set[str] = set()
    for name, task, _ in layout.query_sets("train"):
        paths.update(q.image_path for q in read_queries(layout.query_file(name, task, "train")))
    paths.update(c.image_path for c in read_pool(layout.global_pool_file("train")))
    return sorted(p for p in paths if p)


def emoji_captions(skip_langs: Iterable[str] = ()) -> Callable[[str], list[str]]:
    """``captions(code) -> [texts]``: the packaged CLDR names (every language but
    ``skip_langs``) and English keywords of the emoji with that file code, in a fixed order."""
    from mmembed.data.offline.assets import find_assets
    from mmembed.data.offline.emojis import LANGUAGES, load_universe

    by_code = {e.code: e for e in load_universe(find_assets()).values()}
    skip = set(skip_langs)

    def captions(code: str) -> list[str]:
        e = by_code.get(code)
        if e is None:
            return []
        names = [e.names[lang] for lang in LANGUAGES if e.names.get(lang) and lang not in skip]
        return names + list(e.keywords)

    return captions


def held_out_langs(data: Path) -> list[str]:
    """The languages the build at ``data`` holds out of training (its hold_out.json)."""
    try:
        specs = json.loads((data / HOLD_OUT_FILE).read_text(encoding="utf-8"))["specs"]
    except FileNotFoundError:
        return []
    return [s.split(":", 1)[1] for s in specs if s.startswith("lang:")]


def write_align_pairs(
    data: str | Path,
    out: str | Path,
    captions: Callable[[str], list[str]] | None = None,
) -> dict[str, int]:
    """Write the pairs of the offline build at ``data`` into ``out`` (images copied in).

    Each distinct caption text is one candidate; an image's positives are all its captions (the
    trainer draws one per epoch, and the loss never counts another of them as a negative).
    ``captions`` maps an emoji file code to its texts (default: the packaged assets, without the
    languages the build holds out)."""
    data, out = Path(data), Path(out)
    captions = captions or emoji_captions(held_out_langs(data))
    caption_did: dict[str, str] = {}
    queries: list[dict] = []
    images = 0
    for rel in train_images(data):
        m = _IMAGE.match(rel)
        texts = (
            list(dict.fromkeys(t.strip() for t in captions(m.group(2)) if t.strip())) if m else []
        )
        if not texts:
            continue
        images += 1
        dids = [caption_did.setdefault(t, f"{ALIGN_DATASET}:{len(caption_did)}") for t in texts]
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data / rel, target)
        queries.append(
            {
                "qid": f"{ALIGN_DATASET}:{len(queries)}",
                "query_txt": None,
                "query_img_path": rel,
                "query_modality": "image",
                "query_src_content": json.dumps({"image": rel}),
                "pos_cand_list": dids,
                "neg_cand_list": [],
                "task_id": IMAGE_TEXT_TASK,
            }
        )
    if not queries:
        raise ValueError(f"{data}: no train image with a caption; is it an offline build?")
    (out / QUERY_FILE).parent.mkdir(parents=True, exist_ok=True)
    (out / POOL_FILE).parent.mkdir(parents=True, exist_ok=True)
    with open(out / QUERY_FILE, "w", encoding="utf-8") as f:
        for q in queries:
            f.write(json.dumps(q, ensure_ascii=False) + "\n")
    with open(out / POOL_FILE, "w", encoding="utf-8") as f:
        for text, did in caption_did.items():
            row = {"txt": text, "img_path": None, "modality": "text", "did": did,
                   "src_content": None}  # fmt: skip
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    pairs = sum(len(q["pos_cand_list"]) for q in queries)
    return {"images": images, "captions": len(caption_did), "pairs": pairs}
