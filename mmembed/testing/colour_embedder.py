"""A transparent test embedder for search tests: colour words in text and the mean colour of an
image map to the same few axes, so "red" really finds red pictures. It honours the Embedder
encoding contract (dim, fingerprint, encode_queries, encode_candidates), loads images with the
project's loader, and counts what it encodes. Not a model: for tests and demos of plumbing."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from mmembed.data.images import load_image
from mmembed.data.records import Item, as_item

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 40),
    "white": (250, 250, 250),
    "black": (10, 10, 10),
}
_WORD = re.compile(r"[a-z]+")


class ColourEmbedder:
    """dim = len(COLOURS) + 1; the last axis is a small constant so nothing is a zero vector."""

    def __init__(self, *, fail_after: int | None = None, salt: str = "") -> None:
        self.dim = len(COLOURS) + 1
        self.fingerprint = "colour-" + hashlib.sha256(f"v1{salt}".encode()).hexdigest()[:16]
        self.encoded = 0  # candidate items encoded so far
        self.fail_after = fail_after  # raise RuntimeError once this many items were encoded

    def _text(self, text: str | None) -> np.ndarray:
        v = np.zeros(self.dim, np.float32)
        for w in _WORD.findall((text or "").lower()):
            if w in COLOURS:
                v[list(COLOURS).index(w)] += 1.0
        return v

    def _image(self, image) -> np.ndarray:
        rgb = np.asarray(load_image(image), dtype=np.float32).reshape(-1, 3).mean(0)  # (3,)
        ref = np.asarray(list(COLOURS.values()), dtype=np.float32)  # (C, 3)
        d2 = ((ref - rgb) ** 2).sum(1) / (2 * 60.0**2)  # (C,)
        v = np.zeros(self.dim, np.float32)
        v[: len(COLOURS)] = np.exp(-d2)
        return v

    def _encode(self, items: Sequence, image_root=None) -> np.ndarray:
        rows = []
        for it in items:
            item = as_item(it, image_root)
            v = np.zeros(self.dim, np.float32)
            if item.text:
                t = self._text(item.text)
                v += t / max(np.linalg.norm(t), 1e-6) if t.any() else t
            if item.image is not None:
                i = self._image(item.image)
                v += i / np.linalg.norm(i)
            v[-1] = 0.05
            rows.append(v / np.linalg.norm(v))
        return np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)  # (N, dim)

    def encode_queries(
        self,
        queries: Sequence,
        *,
        instructions=None,
        image_root=None,
        batch_size: int = 32,
        show_progress: bool = True,
        convert_to_tensor: bool = False,
    ) -> np.ndarray:
        return self._encode(queries, image_root)

    def encode_candidates(
        self,
        candidates: Sequence,
        *,
        image_root=None,
        batch_size: int = 32,
        show_progress: bool = True,
        convert_to_tensor: bool = False,
    ) -> np.ndarray:
        out = self._encode(candidates, image_root)
        if self.fail_after is not None and self.encoded + len(candidates) > self.fail_after:
            raise RuntimeError("simulated crash during encoding")
        self.encoded += len(candidates)
        return out


def draw_corpus(
    folder, colours: Sequence[str] = ("red", "green", "blue", "yellow"), size: int = 48
) -> dict[str, str]:
    """Write one PNG per colour (with a darker square so it is not flat) and a note per colour
    into ``folder``; returns {name: path}."""
    from pathlib import Path

    from PIL import Image, ImageDraw

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for name in colours:
        rgb = COLOURS[name]
        img = Image.new("RGB", (size, size), rgb)
        d = ImageDraw.Draw(img)
        d.rectangle(
            [size // 4, size // 4, size // 2, size // 2], fill=tuple(max(0, c - 40) for c in rgb)
        )
        p = folder / f"{name}.png"
        img.save(p)
        made[f"{name}.png"] = str(p)
    notes = folder / "notes"
    notes.mkdir(exist_ok=True)
    for name in colours[:2]:
        p = notes / f"{name}-note.txt"
        p.write_text(f"A note about the colour {name}: {name} things.\n", encoding="utf-8")
        made[p.name] = str(p)
    return made


__all__ = ["COLOURS", "ColourEmbedder", "Item", "draw_corpus"]
