"""Text-to-image search over an embedding export: ``mmr-search EXPORT_DIR "a red circle" -k 5``.

The export (``mmr-eval ckpt_path=... eval=export``) names its checkpoint; the query is embedded by
that model's text tower and searched in the export's FAISS index. Prints rank, score and path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import torch

from mmresearch.data.collate import TextEncoder
from mmresearch.evaluation.export import SearchHit, search
from mmresearch.models.loading import load_model


def search_texts(export_dir: str | Path, queries: List[str], k: int = 5, checkpoint: Optional[str] = None, allow_unsafe: bool = False) -> List[List[SearchHit]]:
    """Top-``k`` images for each text query (the model of ``checkpoint`` or of the export)."""
    export_dir = Path(export_dir)
    meta_path = export_dir / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{export_dir} is not an embedding export (no meta.json); make one with `mmr-eval ckpt_path=... eval=export`")
    meta = json.loads(meta_path.read_text())
    checkpoint = checkpoint or meta.get("checkpoint")
    if not checkpoint:
        raise ValueError(f"{meta_path} names no checkpoint; pass --checkpoint")
    model, run_cfg, tokenizer = load_model(checkpoint, allow_unsafe=allow_unsafe)
    encode = TextEncoder(tokenizer, max_length=int(run_cfg.data.get("max_text_length", 32)), padding="longest")
    ids, mask = encode(queries)
    with torch.no_grad():
        queries_emb = model.embed_texts(ids, mask).float().numpy()
    return search(export_dir, queries_emb, k=k)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="mmr-search", description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", help="directory written by `mmr-eval ... eval=export`")
    parser.add_argument("query", nargs="+", help="one or more text queries")
    parser.add_argument("-k", type=int, default=5, help="images per query (default 5)")
    parser.add_argument("--checkpoint", default=None, help="use this checkpoint instead of the export's")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    results = search_texts(args.export_dir, args.query, k=args.k, checkpoint=args.checkpoint)
    if args.json:
        print(json.dumps([{"query": q, "hits": [h.__dict__ for h in hits]} for q, hits in zip(args.query, results)], indent=2))
        return 0
    for query, hits in zip(args.query, results):
        print(f"query: {query}")
        for hit in hits:
            print(f"  {hit.rank:>3}  {hit.score:+.4f}  {hit.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
