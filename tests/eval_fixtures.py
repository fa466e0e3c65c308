"""Shared evaluation fixtures: ``toy_tree``, a small M-BEIR tree with the real naming (VisualNews,
FashionIQ, MSCOCO's split-specific pool, the global union pool), ``hand_run``, a run over it scored
by hand, ``RankingEncoder``, an encoder that ranks its pool as written here, and ``rerank_tree``, a
tree and first-stage run for the reranker. Imported by the eval, rerank and CLI tests; holds no
tests itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mmembed.data.instructions import InstructionRow, InstructionTable, write_instructions
from mmembed.data.mbeir import Layout, write_pool, write_qrels, write_queries
from mmembed.data.records import Candidate, Modality, Query
from mmembed.data.runfile import write_run


def toy_tree(root: Path) -> Path:
    """VisualNews task 0 (text->image), FashionIQ task 7 ((image,text)->image), MSCOCO task 3
    (image->text, split-specific local pool), their global union pool, qrels and instructions."""
    lay = Layout(root)
    (root / "img").mkdir(parents=True)

    def image(name: str, shade: int) -> str:
        Image.new("RGB", (16, 16), (shade % 256, (shade * 7) % 256, 90)).save(root / "img" / name)
        return f"img/{name}"

    vn = [Candidate(f"0:{i}", None, image(f"vn{i}.png", 10 * i), Modality.IMAGE) for i in range(12)]
    fiq = [
        Candidate(f"7:{i}", None, image(f"fq{i}.png", 20 * i + 5), Modality.IMAGE)
        for i in range(15)
    ]
    coco = [
        Candidate(f"9:{100 + i}", f"a caption number {i}", None, Modality.TEXT) for i in range(4)
    ]
    write_pool(lay.pool_file("visualnews", 0), vn)
    write_pool(lay.pool_file("fashioniq", 7), fiq)
    write_pool(root / "cand_pool/local/mbeir_mscoco_task3_test_cand_pool.jsonl", coco)
    write_pool(lay.global_pool_file("test"), vn + fiq + coco)
    queries = {
        ("visualnews", 0): [
            Query("0:0", "news photo zero", None, Modality.TEXT, 0, ["0:0"]),
            Query("0:1", "news photo one", None, Modality.TEXT, 0, ["0:1", "0:2"]),
            Query("0:2", "news photo three", None, Modality.TEXT, 0, ["0:3"]),
            Query("0:3", "news photo four", None, Modality.TEXT, 0, ["0:4"]),
        ],
        ("fashioniq", 7): [
            Query(f"7:{i}", "is darker", f"img/fq{i + 3}.png", Modality.IMAGE_TEXT, 7, [f"7:{i}"])
            for i in range(3)
        ],
        ("mscoco", 3): [
            Query("9:0", None, "img/vn0.png", Modality.IMAGE, 3, ["9:100"]),
            Query("9:1", None, "img/vn1.png", Modality.IMAGE, 3, ["9:101"]),
        ],
    }
    for (name, task), qs in queries.items():
        write_queries(lay.query_file(name, task, "test"), qs)
        write_qrels(lay.qrels_file(name, task, "test"), qs)
    write_instructions(
        lay.instructions_file,
        InstructionTable(
            [
                InstructionRow(
                    "text", "image", "VisualNews", 0, ["Find the news image for this caption."]
                ),
                InstructionRow(
                    "image,text",
                    "image",
                    "FashionIQ",
                    7,
                    ["Find the garment changed as described."],
                ),
                InstructionRow(
                    "image", "text", "MSCOCO", 9, ["Describe this picture.", "Caption this image."]
                ),
            ]
        ),
    )
    return root


def hand_run(path: Path) -> Path:
    """A run file over ``toy_tree`` whose recall and top-1 errors are worked out by hand."""
    fill = [f"0:{i}" for i in range(5, 12)]
    run = {
        "0:0": ["0:0", *fill],  # hit at rank 1
        "0:1": [
            "9:100",
            "0:9",
            "0:8",
            "0:7",
            "0:2",
            "0:5",
        ],  # top-1 is a text: wrong modality; hit at 5
        "0:2": ["7:0", *fill],  # top-1 from FashionIQ: wrong domain; no hit
        # "0:3" unanswered
        "7:0": [f"7:{i}" for i in range(3, 14)] + ["7:0"],  # positive at rank 12: R@20, not R@10
        "7:1": ["7:1", "7:2"],
        "7:2": ["7:5", "7:6"],  # same domain, right modality, wrong item: other
        "9:0": ["9:100"],
        "9:1": ["9:102", "9:101"],
    }
    write_run(
        path,
        {q: [(d, 1.0 - 0.01 * r) for r, d in enumerate(ds)] for q, ds in run.items()},
        tag="hand",
    )
    return path


POOL = [f"0:{i}" for i in range(12)] + [f"7:{i}" for i in range(15)]
POOL += [f"9:{100 + i}" for i in range(4)]  # the union pool of the toy tree, 31 candidates
INSTRUCTIONS = {  # task -> the instructions of its row in the toy tree's table
    0: {"Find the news image for this caption."},
    7: {"Find the garment changed as described."},
    3: {"Describe this picture.", "Caption this image."},
}
POSITIVES = {"0:0": ["0:0"], "0:1": ["0:1", "0:2"], "0:2": ["0:3"], "0:3": ["0:4"]}
POSITIVES |= {"7:0": ["7:0"], "7:1": ["7:1"], "7:2": ["7:2"], "9:0": ["9:100"], "9:1": ["9:101"]}
# each query's ranking of the union pool, best first (unlisted candidates score 0)
RANKING = {
    "0:0": ["7:1", "7:2", "9:100", "0:0"],  # global rank 4: hit; local rank 1
    "0:1": ["9:100", "9:101", "9:102", "9:103", "7:0", "0:2"],  # global rank 6: miss; local 1
    "0:2": ["0:4", "0:5", "0:6", "0:7", "0:8", "0:3"],  # rank 6 in both: miss
    "0:3": ["0:4"],  # hit
    "7:0": [f"0:{i}" for i in range(10)] + ["7:0"],  # global rank 11 (R@10): miss; local 1
    "7:1": [f"7:{i}" for i in range(2, 13)] + ["7:1"],  # rank 12 in both: miss
    "7:2": ["7:2"],  # hit
    "9:0": ["0:0", "0:1", "0:2", "0:3", "0:4", "9:100"],  # global rank 6: miss; local 1
    "9:1": ["9:101"],  # hit
}


class RankingEncoder:
    """A transparent encoder for ``toy_tree``: one-hot candidates, and queries that rank the pool
    as ``RANKING`` says when given their task's instruction, every positive last without it."""

    dim = len(POOL)
    fingerprint = "ranking-encoder-test"

    def encode_candidates(self, cands, **kw) -> np.ndarray:
        return np.eye(self.dim, dtype=np.float32)[[POOL.index(c.did) for c in cands]]  # (N, D)

    def encode_queries(self, queries, *, instructions=None, **kw) -> np.ndarray:
        instructions = instructions or [None] * len(queries)
        out = np.zeros((len(queries), self.dim), dtype=np.float32)  # (Q, D)
        for row, (q, instr) in enumerate(zip(queries, instructions, strict=True)):
            if instr in INSTRUCTIONS[q.task_id]:
                order = RANKING[q.qid]
            else:  # no (or a wrong) instruction: every other candidate first, positives last
                pos = POSITIVES[q.qid]
                order = [d for d in POOL if d not in pos] + pos
            for rank, did in enumerate(order):
                out[row, POOL.index(did)] = len(POOL) - rank
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def rerank_tree(root: Path) -> dict[str, list[tuple[str, float]]]:
    """An MSCOCO task-0 tree (3 caption queries, 8 image candidates, candidate 7 an empty file)
    and the first-stage run to rerank: every query ranks the unreadable candidate second."""
    lay = Layout(root)
    (root / "images").mkdir(parents=True)
    for i in range(8):
        Image.new("RGB", (30, 30 + i), (30 * i, 10, 200 - 20 * i)).save(
            root / "images" / f"{i}.png"
        )
    (root / "images" / "7.png").write_bytes(b"")  # unreadable: empty file
    queries = [
        Query(f"9:{i}", f"caption number {i}", None, Modality.TEXT, 0, [f"9:{10 + i}"])
        for i in range(3)
    ]
    cands = [Candidate(f"9:{10 + i}", None, f"images/{i}.png", Modality.IMAGE) for i in range(8)]
    write_queries(lay.query_file("MSCOCO", 0, "test"), queries)
    write_qrels(lay.qrels_file("MSCOCO", 0, "test"), queries)
    write_pool(lay.pool_file("MSCOCO", 0), cands)
    write_instructions(
        lay.instructions_file,
        InstructionTable(
            [
                InstructionRow(
                    "text",
                    "image",
                    "MSCOCO",
                    9,
                    ["Find me an everyday image that matches the given caption."],
                ),
            ]
        ),
    )
    # ranks: candidate 7 (unreadable) sits at rank 2 for every query
    order = [10, 17, 11, 12, 13, 14, 15, 16]
    return {
        q.qid: [(f"9:{d}", round(0.9 - 0.1 * r, 3)) for r, d in enumerate(order)] for q in queries
    }
