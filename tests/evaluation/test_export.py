"""FAISS search over exported embeddings returns the exact top-k of the inner products."""

import json

import numpy as np
import pytest

from mmresearch.evaluation.export import build_faiss_index, search


def _export(tmp_path, n=50, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    import faiss

    faiss.write_index(build_faiss_index(emb, "flat"), str(tmp_path / "image.faiss"))
    (tmp_path / "images.json").write_text(json.dumps([{"id": 100 + i, "path": f"images/{i}.png"} for i in range(n)]))
    return emb


def test_flat_search_is_exact(tmp_path):
    emb = _export(tmp_path)
    queries = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
    hits = search(tmp_path, queries, k=5)
    for q, row in zip(queries, hits):
        expected = np.argsort(-(emb @ q))[:5]
        assert [h.image_id - 100 for h in row] == expected.tolist()
        assert [h.rank for h in row] == [1, 2, 3, 4, 5]
        assert row[0].score == pytest.approx(float((emb @ q).max()), rel=1e-5)
        assert row[0].path.endswith(f"images/{expected[0]}.png") and row[0].path.startswith("/")


def test_hnsw_finds_the_nearest_on_small_data(tmp_path):
    emb = _export(tmp_path)
    index = build_faiss_index(emb, "hnsw")
    _, rows = index.search(emb[:5], 1)
    assert rows[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_width_mismatch_and_unknown_index(tmp_path):
    _export(tmp_path)
    with pytest.raises(ValueError, match="width"):
        search(tmp_path, np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="export.index"):
        build_faiss_index(np.zeros((2, 4), np.float32), "ivf")
