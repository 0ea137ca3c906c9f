"""``mmr-export ckpt_path=RUN format=hf out=DIR``: a ``model=clip`` run written in transformers'
format loads with ``AutoModel.from_pretrained`` (no missing or unexpected key) and gives the run's
embeddings and logits; ``mmr-eval model=clip model.pretrained=DIR`` reproduces
``mmr-eval ckpt_path=RUN``'s test metrics exactly."""

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

from mmresearch.models.loading import load_model

from helpers import FAST, REPO, run_cli
from pretrained_fixtures import captions, paired_checkpoint, random_images

pytestmark = pytest.mark.slow

COMMON = ["loss=infonce", "tokenizer.min_vocab_size=100", "data.image_size=32", "num_threads=1"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    checkpoint = paired_checkpoint(root / "clip", "clip")
    run = root / "run"
    proc = run_cli([*FAST, "model=clip", f"model.pretrained={checkpoint}", *COMMON, f"hydra.run.dir={run}"], cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-5000:]
    out = root / "hf"
    proc = run_cli([f"ckpt_path={run}", "format=hf", f"out={out}"], cwd=REPO, module="mmresearch.export")
    assert proc.returncode == 0, proc.stderr[-5000:]
    return run, out


def test_transformers_loads_the_export_and_gives_the_runs_embeddings(exported):
    run, out = exported
    model, _, tokenizer = load_model(run)
    reference, info = AutoModel.from_pretrained(str(out), output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched key
    reference.eval()
    assert AutoTokenizer.from_pretrained(str(out))(captions(4)).input_ids == tokenizer(captions(4)).input_ids
    AutoImageProcessor.from_pretrained(str(out))  # the processor files travel too
    images, tokens = random_images(4, seed=3), tokenizer(captions(5, seed=3), padding="longest", return_tensors="pt")
    with torch.no_grad():
        ours_i, ours_t = model.embed_images(images), model.embed_texts(tokens.input_ids, tokens.attention_mask)
        ref = reference(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, pixel_values=images)
        logits = model.objectives["image_text"].temperature() * ours_i @ ours_t.T
    torch.testing.assert_close(ours_i, F.normalize(ref.image_embeds, dim=-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(ours_t, F.normalize(ref.text_embeds, dim=-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(logits, ref.logits_per_image, atol=1e-4, rtol=1e-5)


def test_evaluating_the_export_reproduces_the_checkpoints_metrics(exported, tmp_path):
    run, out = exported
    common = ["precision=32-true", "trainer.enable_progress_bar=false", "num_threads=1"]
    proc = run_cli([f"ckpt_path={run}", *common, f"hydra.run.dir={tmp_path / 'ckpt'}"], cwd=REPO, module="mmresearch.eval")
    assert proc.returncode == 0, proc.stderr[-5000:]
    proc = run_cli(["model=clip", f"model.pretrained={out}", *FAST[:5], *COMMON, *common, f"hydra.run.dir={tmp_path / 'hf'}"], cwd=REPO,
                   module="mmresearch.eval")
    assert proc.returncode == 0, proc.stderr[-5000:]
    want = json.loads((tmp_path / "ckpt" / "results.json").read_text())["metrics"]
    got = json.loads((tmp_path / "hf" / "results.json").read_text())["metrics"]
    keys = [k for k in want if k.startswith("test/") and ("R@" in k or "rsum" in k)]
    assert keys and {k: got[k] for k in keys} == {k: want[k] for k in keys}


def test_wise_ft_table_runs_from_the_pretrained_checkpoint_to_the_run(exported, tmp_path):
    """``eval=wise_ft``: alpha 1 is the run's own test, alpha 0 the pretrained checkpoint's
    (``mmr-eval model=clip`` of it, no training)."""
    run, _ = exported
    common = ["precision=32-true", "trainer.enable_progress_bar=false", "num_threads=1"]
    proc = run_cli([f"ckpt_path={run}", "eval=wise_ft", "eval.wise_ft.alphas=[0,0.5,1]", *common, f"hydra.run.dir={tmp_path / 'wise'}"],
                   cwd=REPO, module="mmresearch.eval")
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "| alpha | t2i_R@1 | i2t_R@1 | rsum |" in proc.stdout + proc.stderr
    results = json.loads((tmp_path / "wise" / "results.json").read_text())
    rows = {r["alpha"]: r["metrics"] for r in results["wise_ft"]}
    assert set(rows) == {0.0, 0.5, 1.0}
    pretrained = json.loads((run / "results.json").read_text())["config"]["model"]["pretrained"]
    proc = run_cli(["model=clip", f"model.pretrained={pretrained}", *FAST[:5], *COMMON, *common, f"hydra.run.dir={tmp_path / 'base'}"],
                   cwd=REPO, module="mmresearch.eval")
    assert proc.returncode == 0, proc.stderr[-5000:]
    base = json.loads((tmp_path / "base" / "results.json").read_text())["metrics"]
    keys = [k for k in base if k.startswith("test/") and ("R@" in k or "rsum" in k)]
    assert {k: rows[0.0][k] for k in keys} == {k: base[k] for k in keys}
    assert {k: rows[1.0][k] for k in keys} == {k: results["metrics"][k] for k in keys}
