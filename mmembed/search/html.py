"""A self-contained HTML results page (`mmembed search --html OUT`): a thumbnail grid whose images
are embedded as data URIs and whose links are relative paths, so the page works opened from disk
and moved with its folder. Knows nothing of models or indexes; everything shown is escaped."""

from __future__ import annotations

import html
import logging
import os
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmembed.data.atomic import atomic_write_text
from mmembed.data.images import ImageLoadError
from mmembed.search.query import Hit
from mmembed.search.thumbs import data_uri, thumbnail_bytes

log = logging.getLogger(__name__)

_CSS = """
:root { --bg:#f6f7f9; --card:#fff; --ink:#1d2330; --muted:#667085; --accent:#3056d3; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
       background:var(--bg); color:var(--ink); }
header { padding:18px 28px; background:var(--card); border-bottom:1px solid #e3e6ec;
         display:flex; gap:18px; align-items:center; }
header h1 { font-size:18px; margin:0; }
header .q { color:var(--muted); }
header img { height:64px; border-radius:6px; border:1px solid #e3e6ec; }
main { padding:24px 28px; display:grid; gap:16px;
       grid-template-columns:repeat(auto-fill, minmax(200px, 1fr)); }
.card { background:var(--card); border:1px solid #e3e6ec; border-radius:10px; overflow:hidden;
        display:flex; flex-direction:column; }
.card a.thumb { display:flex; align-items:center; justify-content:center; height:190px;
                background:#eef0f4; }
.card a.thumb img { max-width:100%; max-height:190px; object-fit:contain; }
.card .doc { padding:14px; height:190px; overflow:hidden; background:#fbfbfd; font-size:13px;
             color:#344054; white-space:pre-wrap; }
.meta { padding:8px 12px; font-size:12px; color:var(--muted); border-top:1px solid #eef0f4; }
.meta .name { color:var(--ink); font-weight:600; word-break:break-all; }
.rank { float:right; color:var(--accent); font-variant-numeric:tabular-nums; }
.empty { color:var(--muted); padding:40px; }
"""


def _href(target: str, out_dir: Path) -> str:
    """A link to ``target`` relative to the page's folder (works from disk); absolute file:// URL
    when no relative path exists (another drive)."""
    try:
        rel = os.path.relpath(target, out_dir)
    except ValueError:
        return Path(target).as_uri()
    return urllib.parse.quote(rel.replace(os.sep, "/"))


def _thumb(source: Any) -> str | None:
    try:
        return data_uri(thumbnail_bytes(source))
    except ImageLoadError as e:
        log.warning("no thumbnail: %s", e)
        return None


def _card(hit: Hit, out_dir: Path) -> str:
    e = hit.entry
    name = os.path.basename(e.source) + (f":{e.line}" if e.line is not None else "")
    target = e.image or e.source
    href = _href(target, out_dir)
    body = ""
    if e.image:
        uri = _thumb(e.image)
        if uri:
            body = (
                f'<a class="thumb" href="{html.escape(href)}"><img alt="{html.escape(name)}" '
                f'src="{uri}"></a>'
            )
    if not body:
        body = f'<div class="doc">{html.escape(e.snippet() or "(no preview)")}</div>'
    caption = ""
    if e.image and e.text:
        caption = f"<div>{html.escape(e.snippet(120) or '')}</div>"
    return (
        f'<div class="card">{body}<div class="meta"><span class="rank">#{hit.rank} · '
        f'{hit.score:.3f}</span><a class="name" href="{html.escape(href)}" '
        f'title="{html.escape(e.where)}">{html.escape(name)}</a>{caption}</div></div>'
    )


def render_results_page(
    hits: Sequence[Hit],
    *,
    out: str | Path,
    text: str | None = None,
    image: str | Path | None = None,
    title: str = "mmembed search",
) -> Path:
    """Write the results page to ``out`` (a file path) and return it."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    query_bits = []
    if image is not None:
        uri = _thumb(image)
        if uri:
            query_bits.append(f'<img alt="query image" src="{uri}">')
    label = " + ".join(
        x
        for x in [html.escape(text) if text else None, "image" if image is not None else None]
        if x
    )
    query_bits.append(
        f'<div><h1>{html.escape(title)}</h1><div class="q">{label} · '
        f"{len(hits)} result(s)</div></div>"
    )
    cards = "\n".join(_card(h, out.parent) for h in hits) or '<div class="empty">No results.</div>'
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}: {label}</title><style>{_CSS}</style></head>"
        f"<body><header>{''.join(query_bits)}</header><main>{cards}</main></body></html>\n"
    )
    return atomic_write_text(out, page)
