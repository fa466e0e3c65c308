"""What people read about a build: the dataset card (README.md with the stats table and what each
task asks), the contact sheet PNG, and manifest.json with a digest of every file. Also the
progress bar. Knows the task descriptions; knows nothing of how the data was made."""

from __future__ import annotations

import contextlib
import hashlib
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from mmembed.data.offline.tasks import SPLITS, TaskSet

# (dataset, task) -> (what a query asks, why its positives answer it)
TASK_NOTES: dict[tuple[str, int], tuple[str, str]] = {
    ("NotoEmoji", 0): (
        "An emoji's English CLDR name (skin-tone variants included, e.g. 'thumbs up: medium skin tone').",
        "The one Noto image drawn for exactly that code-point sequence.",
    ),
    ("WordNet", 1): (
        "A WordNet 3.0 definition (gloss without examples), e.g. 'a member of the genus Canis ...'.",
        "The dictionary entry (all lemmas of the synset and its part of speech) it defines. Definitions "
        "that contain one of their own lemmas are left out, so lexical overlap does not give the answer away.",
    ),
    ("NotoEmoji", 2): (
        "A CLDR English keyword, e.g. 'cat'.",
        "Every card (Noto image + English name) of an emoji annotated with that keyword in the split: "
        f"multi-positive; keywords shared by more than {12} emoji are not asked.",
    ),
    ("NotoEmoji", 3): (
        "A Noto emoji image.",
        "Its English CLDR name; the pool holds the names of every emoji of the split, skin tones included.",
    ),
    ("Gemojione", 4): (
        "A Noto emoji image.",
        "The same code-point sequence drawn in the gemojione (EmojiOne 2) art style; the pool holds every "
        "gemojione drawing of the split, skin-tone variants included.",
    ),
    ("NotoEmoji", 6): (
        "A Noto emoji image plus a language request, e.g. 'its name in French'.",
        "The CLDR name of that emoji in that language. The pool holds the names of every untoned emoji of "
        "the split in seven languages: the image alone leaves seven candidates, the text alone every name "
        "in that language.",
    ),
    ("NotoEmoji", 7): (
        "A Noto emoji image plus an edit: a skin tone ('with medium-dark skin tone'), a gender "
        "('as a woman'), a role ('as a firefighter') or hair ('with red hair').",
        "The Noto image of the emoji the edit produces (a ZWJ sequence or a skin-tone variant, same gender "
        "and tone as the source unless the edit changes them). The source image is never a positive; the "
        "text alone matches every emoji with that tone, gender or role.",
    ),
    ("Gemojione", 8): (
        "A Noto emoji image plus a language request, e.g. 'its German card'.",
        "The card that draws the same emoji in the gemojione style and carries its name in that language "
        "(cards exist in English, French, Spanish and German); image alone leaves four cards, text alone "
        "every card in that language.",
    ),
}

CELL = 96
ROW_H = CELL + 16
TEXT_W = 230


SHEET_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"  # Debian fonts-dejavu-core


def _font(size: int = 13) -> ImageFont.ImageFont:
    """DejaVu Sans where installed (accents); Pillow's ASCII-only default font otherwise."""
    if Path(SHEET_FONT).exists():
        return ImageFont.truetype(SHEET_FONT, size)
    return ImageFont.load_default(size=size)


def _text_cell(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str | None, font) -> None:
    if text:
        lines = textwrap.wrap(text, width=32)[:6]
        draw.multiline_text(xy, "\n".join(lines), fill=(20, 20, 20), font=font, spacing=2)


def write_contact_sheet(root: Path, tasks: list[TaskSet], per_task: int = 3) -> Path:
    """A PNG with ``per_task`` test examples of every task: query (image, text) -> first positive."""
    rows = []
    for ts in tasks:
        queries = ts.queries["test"] or ts.queries["train"]
        step = max(1, len(queries) // per_task)
        rows += [(ts, q) for q in queries[::step][:per_task]]
    font, head = _font(13), _font(15)
    width = 110 + 2 * (CELL + TEXT_W + 20) + 40
    sheet = Image.new("RGB", (width, 10 + ROW_H * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (ts, q) in enumerate(rows):
        y = 10 + i * ROW_H
        draw.text((8, y + 4), f"{ts.dataset}\ntask {ts.task}", fill=(0, 0, 120), font=head)
        x = 110
        for image, text in ((q.image, q.text), (q.positives[0].image, q.positives[0].text)):
            if image:
                with Image.open(root / image) as im:
                    sheet.paste(im.convert("RGB"), (x, y))
            _text_cell(draw, (x + CELL + 6, y + 4), text, font)
            x += CELL + TEXT_W + 20
        draw.text((110 + CELL + TEXT_W - 6, y + CELL // 2 - 8), "->", fill=(150, 0, 0), font=head)
        draw.line((0, y + ROW_H - 4, width, y + ROW_H - 4), fill=(220, 220, 220))
    path = root / "contact_sheet.png"
    sheet.save(path, format="PNG", compress_level=6)
    return path


def stats_table(manifest: dict) -> str:
    """Markdown table: queries and pool size per (dataset, task) and split."""
    head = (
        "| dataset | task | query → candidate | "
        + " | ".join(f"{s} queries | {s} pool" for s in SPLITS)
        + " | test multi-positive |"
    )
    lines = [head, "|" + "---|" * (4 + 2 * len(SPLITS))]
    for row in manifest["tasks"]:
        sp = row["splits"]
        cells = " | ".join(f"{sp[s]['queries']:,} | {sp[s]['pool']:,}" for s in SPLITS)
        lines.append(f"| {row['dataset']} ({row['dataset_id']}) | {row['task']} | "
                     f"{row['query_modality']} → {row['cand_modality']} | {cells} | "
                     f"{sp['test']['multi_positive_queries']:,} |")  # fmt: skip
    g = manifest["global_pool"]
    lines.append(
        "| union | all | global pool | " + " | ".join(f"– | {g[s]:,}" for s in SPLITS) + " | – |"
    )
    return "\n".join(lines)


def write_card(root: Path, manifest: dict) -> Path:
    s = manifest["settings"]
    parts = [
        "# mmembed offline benchmark\n",
        "An M-BEIR-format retrieval benchmark built offline by `mmembed data build-offline` from "
        "packaged assets: Noto Color Emoji drawn with Pillow, CLDR names and keywords in seven "
        "languages, gemojione art, zero-width-joiner sequences and skin-tone modifiers, and WordNet "
        "3.0 glosses. The layout, file names and fields are M-BEIR's (query/, cand_pool/local, "
        "cand_pool/global, qrels/, instructions/).\n",
        f"Seed {s['seed']}, limit {s['limit']}, images {s['render_size']}×{s['render_size']} PNG. "
        "Dataset ids: " + ", ".join(f"{k} {v}" for k, v in manifest["datasets"].items()) + ".\n",
        "## Statistics\n",
        stats_table(manifest) + "\n",
        "## Splits and pools\n",
        "- Splits are disjoint by underlying item: an emoji group (an emoji with all its skin-tone and "
        "gender variants and every ZWJ sequence built on the same non-person part, e.g. all "
        "firefighters) or a WordNet synset goes wholly to train, val or test "
        f"({', '.join(f'{k} {v:.0%}' for k, v in s['split_fractions'].items())} of units, by a seeded hash). "
        "Test therefore asks about emoji and senses never seen in training. The plain person emoji, "
        "the query images of role and hair edits, are pinned to train, so no val or test image "
        "appears in a training query.",
        "- Local pool (`cand_pool/local`, one per task as in M-BEIR) = the candidates of the test "
        "split. Train and val candidates live in the global union pools "
        "`mbeir_union_{train,val}_cand_pool.jsonl`; `mbeir_union_test_cand_pool.jsonl` is the union "
        "of the local pools. Every positive of a split's queries is in that split's global pool.",
        "- One did per distinct content per split: a text or image used by several tasks of a dataset "
        "(e.g. an English name in tasks 3 and 6) is one candidate, so the global pool holds no "
        "duplicate to tie with a positive. Emoji whose drawings are pixel-identical to another's are "
        "dropped (listed in manifest.json).\n",
        "## Tasks\n",
    ]
    for row in manifest["tasks"]:
        ask, why = TASK_NOTES[(row["dataset"], row["task"])]
        parts.append(f"### {row['dataset']} task {row['task']}: {row['query_modality']} → "
                     f"{row['cand_modality']}\n\n- Query: {ask}\n- Positives: {why}\n")  # fmt: skip
    if held := manifest.get("hold_out"):
        removed = "; ".join(f"{s}: {r['queries']:,} queries, {r['candidates']:,} candidates"
                            for s, r in held["removed"].items())  # fmt: skip
        asked = ", ".join(f"{k} {v:,}" for k, v in held["test_queries"].items())
        parts.append("## Held-out sources\n\n"
                     f"No train or val record touches {', '.join(held['specs'])} (removed: "
                     f"{removed}). The test split is the one built without them; test queries "
                     f"touching each source (listed in hold_out.json): {asked}.\n")  # fmt: skip
    parts.append("## Assets\n\n" + "\n".join(f"- {k}: {v}" for k, v in manifest["assets"].items())
                 + "\n\nLicences: see each package's copyright file (Noto Color Emoji: OFL 1.1; CLDR: "
                 "Unicode licence; gemojione art: CC BY 4.0; WordNet 3.0: WordNet licence).\n")  # fmt: skip
    path = root / "README.md"
    path.write_text("\n".join(parts), encoding="utf-8", newline="\n")
    return path


def tree_digest(root: Path, exclude: tuple[str, ...] = ("manifest.json",)) -> tuple[str, int, int]:
    """sha256 over (relative path, file sha256) of every file; also file count and bytes."""
    h = hashlib.sha256()
    n = size = 0
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel not in exclude:
            data = p.read_bytes()
            h.update(f"{rel}\0{hashlib.sha256(data).hexdigest()}\n".encode())
            n += 1
            size += len(data)
    return h.hexdigest(), n, size


def write_manifest(root: Path, manifest: dict) -> dict:
    digest, files, size = tree_digest(root)
    manifest = {**manifest, "files": files, "bytes": size, "digest": digest}
    text = json.dumps(manifest, ensure_ascii=False, indent=1, sort_keys=True) + "\n"
    (root / "manifest.json").write_text(text, encoding="utf-8", newline="\n")
    return manifest


@contextlib.contextmanager
def progress(show: bool, label: str, total: int) -> Iterator:
    """A rich progress bar yielding ``advance(n)``; a no-op when ``show`` is False."""
    if not show:
        yield None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)
