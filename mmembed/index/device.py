"""Where FAISS runs, in one place: all GPUs (the index sharded over them) when faiss has GPU
support and GPUs are present, the CPU otherwise. Knows nothing of ids, manifests or models."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def import_faiss() -> Any:
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its INFO lines are noise
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a core dependency
        raise ImportError(
            "mmembed.index needs faiss: pip install faiss-cpu (or mmembed[gpu] for faiss-gpu)"
        ) from e
    return faiss


def num_gpus() -> int:
    """GPUs faiss can use (0 with faiss-cpu)."""
    faiss = import_faiss()
    get = getattr(faiss, "get_num_gpus", None)
    try:
        return int(get()) if get else 0
    except Exception:  # a GPU build without a driver
        return 0


def resolve_gpu(gpu: bool | str | int) -> int:
    """How many GPUs to use for ``gpu`` = 'auto' | True | False | a count."""
    available = num_gpus()
    if gpu == "auto":
        return available
    if gpu is False or gpu == 0:
        return 0
    if gpu is True:
        if not available:
            raise RuntimeError(
                "gpu=True but faiss sees no GPU: install mmembed[gpu] (faiss-gpu) on a CUDA machine, "
                "or pass gpu='auto'"
            )
        return available
    n = int(gpu)
    if n > available:
        raise RuntimeError(f"asked for {n} GPU(s) but faiss sees {available}")
    return n


def index_to_gpus(cpu_index: Any, ngpu: int) -> Any:
    """A search replica of ``cpu_index`` sharded over ``ngpu`` GPUs, or the index itself (CPU).

    Index types without a GPU implementation (HNSW, for one) stay on the CPU."""
    if ngpu <= 0:
        return cpu_index
    faiss = import_faiss()
    co = faiss.GpuMultipleClonerOptions()
    co.shard = True  # split the vectors over the GPUs: memory adds up, search fans out
    co.useFloat16 = False
    try:
        return faiss.index_cpu_to_all_gpus(cpu_index, co=co, ngpu=ngpu)
    except RuntimeError as e:
        log.warning("this index type cannot move to the GPU (%s); searching on the CPU", e)
        return cpu_index
