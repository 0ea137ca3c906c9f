"""A randomly initialised small CLIP in transformers' format, with a CLIP BPE tokenizer trained on
the built-in captions and flickr8k-mini's, and a CLIP image processor at 64 px: the starting point
of the end-to-end run (``run.sh``), made offline.

    python experiments/clip_finetune/make_checkpoint.py OUT_DIR [FLICKR_CAPTIONS_CSV]
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

from mmresearch.data.tokenizer import shapes_corpus

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def main(out: Path, flickr_csv: Path | None) -> None:
    corpus = list(shapes_corpus())
    if flickr_csv is not None and flickr_csv.is_file():
        with open(flickr_csv, newline="", encoding="utf-8") as f:
            corpus += [row["caption"] for row in csv.DictReader(f)]
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token=EOS))
    bpe.normalizer = normalizers.Lowercase()
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    bpe.train_from_iterator(corpus, trainer=trainers.BpeTrainer(vocab_size=4000, special_tokens=[BOS, EOS], end_of_word_suffix="</w>",
                                                                show_progress=False))
    model_json = json.loads(bpe.to_str())["model"]
    raw = out / "bpe"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "vocab.json").write_text(json.dumps(model_json["vocab"]))
    merges = [" ".join(m) if isinstance(m, list) else m for m in model_json["merges"]]
    (raw / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(raw / "vocab.json"), str(raw / "merges.txt"), model_max_length=77)
    eos, bos = tokenizer.convert_tokens_to_ids(EOS), tokenizer.convert_tokens_to_ids(BOS)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                         max_position_embeddings=77, eos_token_id=eos, bos_token_id=bos, pad_token_id=eos),
        vision_config=dict(image_size=64, patch_size=8, hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4),
        projection_dim=128,
    )
    model = CLIPModel(config)
    model.logit_scale.data.fill_(math.log(1 / 0.07))
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(str(out))
    print(f"{out}: CLIPModel {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, vocabulary {len(tokenizer)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
