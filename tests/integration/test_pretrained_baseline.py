"""``mmr-eval model=clip model.pretrained=DIR data=...``: the pretrained model evaluated as it is,
with no training and no ckpt_path; its retrieval metrics are those of the reference model's own
embeddings (transformers' ``get_*_features`` on its processor's pixels and its tokenizer's ids),
and ``eval=export`` writes the embeddings and index."""

import json
import os

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

from mmresearch.evaluation.retrieval import retrieval_metrics_from_scores
from mmresearch.utils.instantiate import build

from helpers import REPO, run_cli
from pretrained_fixtures import paired_checkpoint
from real_fixtures import write_csv, write_images

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    root = tmp_path_factory.mktemp("baseline")
    checkpoint = paired_checkpoint(root / "clip", "clip")
    names = write_images(root / "images", 10, size=(50, 38))
    words = ["red", "blue", "green", "circle", "square", "small", "large", "left", "right", "above"]
    captions = {name: [f"a {words[i]} {words[(i + 3) % 10]}", f"{words[(i + 5) % 10]} {words[i]} shape"] for i, name in enumerate(names)}
    path = write_csv(root / "captions.csv", captions)
    data = [f"data.{split}.path={path}" for split in ("train", "val", "test")] + [f"data.{split}.image_root={root / 'images'}" for split in ("train", "val", "test")]
    out = root / "eval"
    proc = run_cli(["model=clip", f"model.pretrained={checkpoint}", "loss=infonce", "tokenizer.min_vocab_size=100", "data=csv", *data,
                    "data.train.image_key=image", "data.train.caption_key=caption", "data.num_workers=0", "precision=32-true",
                    "trainer.enable_progress_bar=false", "eval=export", "num_threads=1", f"hydra.run.dir={out}"], cwd=REPO, module="mmresearch.eval")
    assert proc.returncode == 0, proc.stderr[-5000:]
    return checkpoint, out, json.loads((out / "results.json").read_text())


def test_the_metrics_are_the_reference_models(baseline):
    checkpoint, _, results = baseline
    assert results["checkpoint"] is None and str(checkpoint) in results["model"]
    cfg = OmegaConf.create(results["config"])
    tokenizer = build(cfg, "tokenizer")
    dm = build(cfg, "data", tokenizer=tokenizer)
    dm.setup("test")
    test = dm.test_dataset
    reference = AutoModel.from_pretrained(str(checkpoint)).eval()
    processor, ref_tokenizer = AutoImageProcessor.from_pretrained(str(checkpoint)), AutoTokenizer.from_pretrained(str(checkpoint))
    pixels = processor(images=[Image.open(p).convert("RGB") for p in test.paths], return_tensors="pt")["pixel_values"]
    texts = [c for caps in test.captions for c in caps]
    tokens = ref_tokenizer(texts, padding="longest", truncation=True, max_length=cfg.data.max_text_length, return_tensors="pt")
    with torch.no_grad():
        images = F.normalize(reference.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        captions = F.normalize(reference.get_text_features(**tokens).pooler_output, dim=-1)
    owner = torch.tensor([i for i, caps in enumerate(test.captions) for _ in caps])
    want = retrieval_metrics_from_scores(captions @ images.T, images @ captions.T, owner)
    got = results["metrics"]
    for key in ("t2i_R@1", "t2i_R@5", "i2t_R@1", "i2t_R@5", "rsum"):
        assert got[f"test/{key}"] == pytest.approx(want[key], abs=1e-6), key


def test_the_export_holds_the_embeddings_and_the_image_files(baseline):
    _, out, results = baseline
    export = out / "embeddings"
    entries = json.loads((export / "images.json").read_text())
    assert results["export_dir"] == str(export) and (export / "image_embeddings.npy").is_file()
    assert entries and all(entry["path"].endswith(".jpg") and os.path.isfile(entry["path"]) for entry in entries)
