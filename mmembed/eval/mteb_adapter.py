"""An mteb (v2) encoder over an mmembed Embedder, and a local BEIR-format folder as an mteb
retrieval task, so ``mteb.evaluate(MTEBEncoder(emb), beir_task(DIR))`` runs offline.
mteb is optional (pip install mteb); it is imported only here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmembed.data.records import Item


def _mteb() -> Any:
    try:
        import mteb
    except ImportError as e:
        raise ImportError("the mteb adapter needs mteb: pip install mteb") from e
    return mteb


class MTEBEncoder:
    """mteb's EncoderProtocol for an Embedder: queries get the query prompt (with the task's
    instruction unless ``instruction`` overrides it), documents the candidate prompt; image
    columns become image items, so multimodal mteb tasks work too."""

    def __init__(
        self,
        embedder: Any,
        *,
        name: str = "mmembed/embedder",
        instruction: str | None = None,
        use_task_instructions: bool = True,
        batch_size: int = 32,
    ) -> None:
        self.embedder = embedder
        self.name = name
        self.instruction = instruction
        self.use_task_instructions = use_task_instructions
        self.batch_size = batch_size

    @property
    def mteb_model_meta(self) -> Any:
        from mteb.models.model_meta import ModelMeta

        return ModelMeta.create_empty(
            {
                "name": self.name if "/" in self.name else f"mmembed/{self.name}",
                "revision": self.embedder.fingerprint.replace("sha256:", "")[:12],
                "embed_dim": int(self.embedder.dim),
                "similarity_fn_name": "cosine",
                "framework": ["PyTorch"],
                "use_instructions": self.use_task_instructions or self.instruction is not None,
                "modalities": ["text", "image"],
            }
        )

    def _instruction(self, task_metadata: Any) -> str | None:
        if self.instruction is not None:
            return self.instruction
        if not self.use_task_instructions:
            return None
        from mteb.abstasks.abstask import get_abstask_prompt

        prompt = getattr(task_metadata, "prompt", None)
        if isinstance(prompt, dict):
            prompt = prompt.get("query")
        if not prompt:
            try:
                prompt = get_abstask_prompt(task_metadata.name)
            except Exception:  # noqa: BLE001 - tasks without a registered prompt
                prompt = None
        return prompt or None

    def encode(
        self,
        inputs: Any,
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        prompt_type: Any = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Batches of mteb inputs (dicts with 'text' and/or 'image' lists) -> (N, dim) float32."""
        items: list[Item] = []
        for batch in inputs:
            texts = batch.get("text")
            images = batch.get("image")
            n = len(texts) if texts is not None else len(images or [])
            for i in range(n):
                text = texts[i] if texts is not None else None
                image = images[i] if images is not None else None
                items.append(Item(text=text if (text or image is None) else None, image=image))
        if not items:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        is_query = getattr(prompt_type, "value", prompt_type) == "query"
        kw = dict(
            batch_size=kwargs.get("batch_size", self.batch_size),
            show_progress=bool(kwargs.get("show_progress_bar", False)),
        )
        if is_query:
            emb = self.embedder.encode_queries(
                items, instructions=self._instruction(task_metadata), **kw
            )
        else:
            emb = self.embedder.encode_candidates(items, **kw)
        return np.asarray(emb, dtype=np.float32)  # (N, dim), L2-normalised

    def similarity(self, a: Any, b: Any) -> Any:
        import torch

        a, b = torch.as_tensor(np.atleast_2d(a)), torch.as_tensor(np.atleast_2d(b))
        return (
            torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T
        )  # (A, B)

    def similarity_pairwise(self, a: Any, b: Any) -> Any:
        import torch

        a, b = torch.as_tensor(np.atleast_2d(a)), torch.as_tensor(np.atleast_2d(b))
        return (
            torch.nn.functional.normalize(a, dim=-1) * torch.nn.functional.normalize(b, dim=-1)
        ).sum(-1)  # (N,)


def beir_task(
    root: str | Path,
    *,
    split: str = "test",
    name: str | None = None,
    instruction: str | None = None,
    ignore_identical_ids: bool = True,
) -> Any:
    """A local BEIR-format folder as an mteb retrieval task (no download). Like ``eval beir``
    (and BEIR), a retrieved document with the query's own id is ignored; mteb's own default
    is not to (its tasks whose corpora hold the queries, e.g. ArguAna, Quora, turn it on)."""
    _mteb()
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
    from mteb.abstasks.task_metadata import TaskMetadata

    from mmembed.data.beir import read_beir

    root = Path(root)
    task_name = (
        name
        or f"Local{''.join(p.capitalize() for p in root.name.replace('-', '_').split('_'))}Retrieval"
    )
    metadata = TaskMetadata(
        name=task_name,
        type="Retrieval",
        main_score="ndcg_at_10",
        description=f"Local BEIR-format retrieval set at {root}",
        reference=None,
        dataset={"path": str(root), "revision": "local"},
        category="t2t",
        modalities=["text"],
        eval_splits=[split],
        eval_langs=["eng-Latn"],
        date=None,
        domains=None,
        task_subtypes=None,
        license=None,
        annotations_creators=None,
        dialect=None,
        sample_creation=None,
        bibtex_citation=None,
        prompt={"query": instruction} if instruction else None,
    )

    class LocalBeirTask(AbsTaskRetrieval):
        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            data = read_beir(root, split)
            split_data = RetrievalSplitData(
                queries=Dataset.from_list([{"id": q, "text": t} for q, t in data.queries.items()]),
                corpus=Dataset.from_list(
                    [
                        {"id": d, "title": v["title"], "text": v["text"]}
                        for d, v in data.corpus.items()
                    ]
                ),
                relevant_docs=data.qrels,
                top_ranked=None,
            )
            self.dataset = {"default": {split: split_data}}
            self.data_loaded = True

    LocalBeirTask.metadata = metadata
    LocalBeirTask.ignore_identical_ids = ignore_identical_ids
    return LocalBeirTask()
