"""Embedding export and a FAISS index over image embeddings.

An export directory holds:

- ``image_embeddings.npy`` float32 ``[N, E]`` and ``text_embeddings.npy`` float32 ``[T, E]``
  (L2-normalised, so inner product = cosine similarity);
- ``images.json``: one ``{"id", "path"}`` per row (paths relative to the directory when the data
  has no files of its own: the built-in images are written as PNGs under ``images/``);
- ``captions.json``: one ``{"id", "image_id", "caption"}`` per row;
- ``image.faiss``: a FAISS index over the image embeddings (exact ``IndexFlatIP`` by default);
- ``meta.json``: the checkpoint, the split, the sizes and the index kind.

:func:`search` embeds a text query with the model and returns the top-k images.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from PIL import Image

INDEX_KINDS = ("flat", "hnsw")


def build_faiss_index(embeddings: np.ndarray, kind: str = "flat"):
    """An inner-product FAISS index over ``[N, E]`` float32 rows: ``flat`` (exact) or ``hnsw``
    (approximate, for millions of images)."""
    import faiss

    if kind not in INDEX_KINDS:
        raise ValueError(f"export.index must be one of {list(INDEX_KINDS)}, got {kind!r}")
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    index = faiss.IndexFlatIP(x.shape[1]) if kind == "flat" else faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.add(x)
    return index


def _image_entries(dataset, image_ids: List[int], images_u8: Optional[torch.Tensor], out_dir: Path) -> List[dict]:
    """``{"id", "path"}`` per image: the dataset's own file when it has one, else a written PNG."""
    entries = []
    for row, image_id in enumerate(image_ids):
        path = dataset.image_path(row) if hasattr(dataset, "image_path") else None
        if path is None:
            rel = Path("images") / f"{image_id:07d}.png"
            target = out_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images_u8[row].permute(1, 2, 0).numpy()).save(target)
            path = str(rel)
        entries.append({"id": int(image_id), "path": str(path)})
    return entries


@torch.no_grad()
def export_embeddings(model, datamodule, out_dir: str | Path, split: str = "test", index: str = "flat", checkpoint: Optional[str] = None) -> Path:
    """Embed every image and caption of ``split`` and write the export directory (see module doc)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = datamodule.dataset(split)
    loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader() if split == "val" else None
    if loader is None:
        raise ValueError(f"export.split must be val or test, got {split!r}")
    model.eval()
    image_rows, text_rows, image_ids, caption_ids, caption_image_ids = [], [], [], [], []
    all_captions = [c for cs in dataset.captions for c in cs]
    for batch in loader:
        batch = move_data_to_device(batch, model.device)
        image_rows.append(model.embed_images(batch.images).float().cpu())
        text_rows.append(model.embed_texts(batch.input_ids, batch.attention_mask).float().cpu())
        image_ids += batch.image_ids.tolist()
        caption_ids += batch.text_ids.tolist()
        caption_image_ids += batch.text_image_ids.tolist()
    if len(all_captions) != len(caption_ids):
        raise RuntimeError(f"the {split} loader gave {len(caption_ids)} captions but the dataset has {len(all_captions)}")
    captions = all_captions  # the loader keeps dataset order: image by image, captions in order
    images = torch.cat(image_rows).numpy()
    texts = torch.cat(text_rows).numpy()
    np.save(out_dir / "image_embeddings.npy", images)
    np.save(out_dir / "text_embeddings.npy", texts)
    u8 = getattr(dataset, "images", None)
    (out_dir / "images.json").write_text(json.dumps(_image_entries(dataset, image_ids, u8, out_dir), indent=0))
    (out_dir / "captions.json").write_text(
        json.dumps([{"id": i, "image_id": j, "caption": c} for i, j, c in zip(caption_ids, caption_image_ids, captions)], indent=0)
    )
    import faiss

    faiss.write_index(build_faiss_index(images, index), str(out_dir / "image.faiss"))
    meta = {"checkpoint": checkpoint, "split": split, "num_images": len(images), "num_captions": len(texts), "dim": int(images.shape[1]), "index": index}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    return out_dir


@dataclass
class SearchHit:
    rank: int
    score: float
    image_id: int
    path: str


def search(export_dir: str | Path, query_embeddings: np.ndarray, k: int = 5) -> List[List[SearchHit]]:
    """Top-``k`` images of the export's FAISS index for each row of ``query_embeddings [Q, E]``."""
    import faiss

    export_dir = Path(export_dir)
    index = faiss.read_index(str(export_dir / "image.faiss"))
    entries = json.loads((export_dir / "images.json").read_text())
    q = np.ascontiguousarray(query_embeddings, dtype=np.float32)
    if q.shape[1] != index.d:
        raise ValueError(f"query embeddings have width {q.shape[1]} but the index of {export_dir} has {index.d}")
    scores, rows = index.search(q, min(k, index.ntotal))
    out = []
    for score_row, id_row in zip(scores, rows):
        hits = []
        for rank, (score, row) in enumerate(zip(score_row.tolist(), id_row.tolist()), start=1):
            if row < 0:
                continue
            path = entries[row]["path"]
            if not Path(path).is_absolute():
                path = str((export_dir / path).resolve())
            hits.append(SearchHit(rank=rank, score=float(score), image_id=int(entries[row]["id"]), path=path))
        out.append(hits)
    return out
