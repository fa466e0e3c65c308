"""Checks that the full build's test split shares no item with what the `--limit 40` models
trained on: the `--limit 40` train split (queries + global train pool), the align pairs, the
mined query files and the WordNet train folder. Compares image bytes (sha1), image paths, emoji
code points, WordNet synsets, candidate texts and query texts; ids are reported too, but the
builder numbers ids per build, so an id shared by two builds does not name the same item.

    python3 eval/mini/full_test/check_disjoint.py FULL_BUILD LIMIT40_RUNS_DIR > disjoint.json
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path


def rows(path: Path):
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def sha(root: Path, rel: str | None, memo: dict) -> str | None:
    if not rel:
        return None
    p = (root / rel).resolve()
    if p not in memo:
        memo[p] = hashlib.sha1(p.read_bytes()).hexdigest()
    return memo[p]


def keys_of(src: str | None) -> set[str]:
    if not src:
        return set()
    d = json.loads(src)
    out = set()
    if "codepoints" in d:
        out.add("cp:" + d["codepoints"])
    if "synset" in d:
        out.add("syn:" + d["synset"])
    return out


def collect(root: Path, qfiles, pfiles, memo) -> dict[str, set]:
    s = {k: set() for k in ("qid", "did", "img_sha", "img_path", "unit", "cand_txt", "query_txt",
                            "query_pair")}  # fmt: skip
    for qf in qfiles:
        for r in rows(qf):
            s["qid"].add(r["qid"])
            if r.get("query_txt"):
                s["query_txt"].add(r["query_txt"])
            if r.get("query_img_path"):
                s["img_path"].add(r["query_img_path"])
                s["img_sha"].add(sha(root, r["query_img_path"], memo))
            s["query_pair"].add((r.get("query_txt"), sha(root, r.get("query_img_path"), memo)))
            s["unit"] |= keys_of(r.get("query_src_content"))
    for pf in pfiles:
        for r in rows(pf):
            s["did"].add(r["did"])
            if r.get("txt"):
                s["cand_txt"].add(r["txt"])
            if r.get("img_path"):
                s["img_path"].add(r["img_path"])
                s["img_sha"].add(sha(root, r["img_path"], memo))
            s["unit"] |= keys_of(r.get("src_content"))
    return s


def main() -> None:
    full, runs = Path(sys.argv[1]), Path(sys.argv[2])
    memo: dict = {}
    test = collect(full, sorted((full / "query/test").glob("*.jsonl")),
                   [full / "cand_pool/global/mbeir_union_test_cand_pool.jsonl"], memo)  # fmt: skip
    lim = runs / "data"
    train = collect(lim, sorted((lim / "query/train").glob("*.jsonl")),
                    [lim / "cand_pool/global/mbeir_union_train_cand_pool.jsonl"], memo)  # fmt: skip
    sources = {"limit40_train_split": train}
    al = runs / "align_pairs"
    if al.exists():
        sources["align_pairs"] = collect(al, sorted((al / "query/train").glob("*.jsonl")),
                                         sorted((al / "cand_pool").glob("*.jsonl")), memo)  # fmt: skip
    for mined in sorted(runs.glob("mined*")):
        sources[mined.name] = collect(lim, sorted(mined.glob("*.jsonl")), [], memo)
    wn = runs / "wordnet_train"
    if wn.exists():
        q = {r["text"] for r in rows(wn / "queries.jsonl")}
        c = {r["text"] for r in rows(wn / "corpus.jsonl")}
        syn = {"syn:" + r["_id"] for r in rows(wn / "queries.jsonl")}
        sources["wordnet_train"] = {"query_txt": q, "cand_txt": c, "unit": syn}
    out: dict = {"test_sizes": {k: len(v) for k, v in test.items()}, "overlap": {}}
    for name, src in sources.items():
        ov = {}
        for k, v in src.items():
            both = test.get(k, set()) & v
            ov[k] = {"train_items": len(v), "shared_with_test": len(both),
                     "examples": sorted(map(str, both))[:8]}  # fmt: skip
        # texts of the test split that are any training text at all (query or candidate)
        all_txt = src.get("query_txt", set()) | src.get("cand_txt", set())
        test_txt = test["query_txt"] | test["cand_txt"]
        ov["any_text"] = {"shared_with_test": len(all_txt & test_txt),
                          "examples": sorted(all_txt & test_txt)[:12]}  # fmt: skip
        out["overlap"][name] = ov
    json.dump(out, sys.stdout, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
