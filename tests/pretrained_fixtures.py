"""Tiny randomly initialised reference-format checkpoints, saved to disk as their libraries save
them, for the offline tests of pretrained-model loading: a CLIP BPE tokenizer trained on the
built-in captions, and transformers CLIP / SigLIP dual-tower models (``save_pretrained``)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import torch

from mmresearch.data.tokenizer import DEFAULT_PROBE_TEXTS

#: special tokens of CLIP's tokenizer
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _corpus() -> list[str]:
    from mmresearch.data.tokenizer import shapes_corpus

    return list(shapes_corpus()) + list(DEFAULT_PROBE_TEXTS) + ["a photo of a {}".format(w) for w in ("dog", "cat", "chair", "window")]


def clip_tokenizer(directory: Path):
    """A CLIP BPE tokenizer (vocab.json + merges.txt, lower-cased, ``</w>`` word ends) trained on
    the built-in captions; saved in ``directory`` with ``save_pretrained``; returns it."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token=EOS))
    bpe.normalizer = normalizers.Lowercase()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=[BOS, EOS], end_of_word_suffix="</w>", show_progress=False)
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    vocab = json.loads(bpe.to_str())["model"]
    raw = directory / "raw"
    raw.mkdir(exist_ok=True)
    (raw / "vocab.json").write_text(json.dumps(vocab["vocab"]))
    merges = [" ".join(m) if isinstance(m, list) else m for m in vocab["merges"]]
    (raw / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(raw / "vocab.json"), str(raw / "merges.txt"), model_max_length=40)
    tokenizer.save_pretrained(str(directory))
    return tokenizer


def paired_checkpoint(directory: Path, kind: str = "clip", seed: int = 0) -> Path:
    """A tiny random ``CLIPModel`` or ``SiglipModel`` (32 px images, 8 px patches, width 32, 2
    layers; CLIP projects to 24) with a trained-looking logit scale (and SigLIP bias), saved with
    ``save_pretrained`` beside its tokenizer. Returns ``directory``."""
    from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    directory = Path(directory)
    tokenizer = clip_tokenizer(directory)
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=40)
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4)
    eos = tokenizer.convert_tokens_to_ids(EOS)
    text.update(eos_token_id=eos, bos_token_id=tokenizer.convert_tokens_to_ids(BOS), pad_token_id=eos)
    torch.manual_seed(seed)
    if kind == "clip":
        config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)
        model = CLIPModel(config)
        model.logit_scale.data.fill_(math.log(30.0))
    else:
        config = SiglipConfig(text_config=text, vision_config=vision)
        model = SiglipModel(config)
        model.logit_scale.data.fill_(math.log(12.0))
        model.logit_bias.data.fill_(-4.0)
    model.save_pretrained(str(directory))
    processor()[kind]().save_pretrained(str(directory))
    return directory


def processor():
    """The image processors of the tiny checkpoints (32 px): CLIP's (shortest side, centre crop,
    OpenAI's statistics) and SigLIP's (squash, 0.5/0.5)."""
    from transformers import CLIPImageProcessor, SiglipImageProcessor

    return {"clip": lambda: CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
            "siglip": lambda: SiglipImageProcessor(size={"height": 32, "width": 32})}


def bert_checkpoint(directory: Path) -> Path:
    """A tiny BERT (not a dual-tower model), for the error of a wrong checkpoint."""
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)).save_pretrained(str(directory))
    return Path(directory)


def random_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


def captions(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["a", "small", "red", "circle", "left", "of", "large", "blue", "square", "photo", "dog"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(2, 9))) for _ in range(n)]
