"""Text retrieval in BEIR format: nDCG@10 / Recall@100 / MRR@10 of a model through the encode
cache and a FAISS index. Reading the folder is ``mmembed.data.beir``. Knows the Embedder
protocol, not any model."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mmembed.data.beir import read_beir
from mmembed.data.errors import ErrorLog
from mmembed.data.records import Item

log = logging.getLogger(__name__)


def evaluate_beir(
    root: str | Path,
    encoder: Any,
    *,
    split: str = "test",
    out_dir: str | Path,
    instruction: str | None = None,
    k: int = 100,
    batch_size: int = 32,
    factory: str = "Flat",
    show_progress: bool = True,
    ignore_identical_ids: bool = True,
    drop_no_relevant: bool = False,
) -> dict[str, Any]:
    """Encode corpus and queries (resumable cache under ``out_dir``), search top-k, score as
    BEIR does (``beir_scores``: ties as pytrec_eval breaks them, all-zero queries count as 0;
    a retrieved document with the query's own id is dropped unless ``ignore_identical_ids`` is
    False -- BEIR's default; mteb's default is False, set True per task where corpora hold
    the queries)."""
    from mmembed.data.runfile import RunWriter
    from mmembed.eval.metrics import beir_scores
    from mmembed.index import Index
    from mmembed.index.encode import EncodeEntry, content_source, encode_entries, load_encoded

    out = Path(out_dir)
    errors = ErrorLog()
    data = read_beir(root, split, errors)
    for e in errors.errors[:10]:
        log.warning("%s", e)
    cache = out / "cache" / encoder.fingerprint.replace("sha256:", "")[:16]
    docs = [EncodeEntry(d, Item(text=data.doc_text(d) or " ")) for d in data.corpus]
    queries = [EncodeEntry(q, Item(text=t or " "), instruction) for q, t in data.queries.items()]
    common = dict(
        shard_size=8192,
        batch_size=batch_size,
        rank=0,
        world_size=1,
        overwrite=True,
        show_progress=show_progress,
    )
    encode_entries(
        encoder,
        docs,
        cache / "corpus",
        is_query=False,
        source=content_source(docs),
        total=len(docs),
        **common,
    )
    encode_entries(
        encoder,
        queries,
        cache / f"queries_{split}",
        is_query=True,
        source=content_source(queries),
        total=len(queries),
        **common,
    )
    demb, dids, _ = load_encoded(cache / "corpus", expect_fingerprint=encoder.fingerprint)
    qemb, qids, _ = load_encoded(cache / f"queries_{split}", expect_fingerprint=encoder.fingerprint)
    index = Index.build(
        demb, dids, factory=factory, fingerprint=encoder.fingerprint, id_mode="table"
    )
    scores, labels = index.search_labels(qemb, k)
    ranked = index.ids_of(labels)
    # {doc: score}: beir_scores ranks ties as pytrec_eval does
    run = {
        q: dict(zip(row, s[: len(row)].tolist(), strict=True))
        for q, row, s in zip(qids, ranked, scores, strict=True)
    }
    with RunWriter(out / f"beir_{split}.trec", tag="mmembed") as w:
        for q, row, s in zip(qids, ranked, scores, strict=True):
            w.add(q, row, s[: len(row)].tolist())
    result = beir_scores(
        run,
        data.qrels,
        recall_k=k if k < 100 else 100,
        ignore_identical_ids=ignore_identical_ids,
        drop_no_relevant=drop_no_relevant,
    )
    result.update(
        {
            "data": str(root),
            "split": split,
            "corpus": len(docs),
            "fingerprint": encoder.fingerprint,
            "instruction": instruction,
            "ignore_identical_ids": ignore_identical_ids,
            "drop_no_relevant": drop_no_relevant,
            "skipped_records": len(errors),
        }
    )
    (out / f"beir_{split}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
