"""Checkpoint loading: weights_only by default, clear errors, run directories resolve."""

import json

import pytest
import torch

from mmresearch.utils.checkpoint import load_checkpoint, resolve_checkpoint_path, run_config
from mmresearch.utils.errors import ConfigError


class NotATensor:  # a pickled class: weights_only loading must refuse it
    pass


def test_plain_checkpoint_loads_weights_only(tmp_path):
    path = tmp_path / "a.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "mmresearch_config": {"seed": 3}}, path)
    ckpt = load_checkpoint(path)
    assert torch.equal(ckpt["state_dict"]["w"], torch.ones(2))
    assert run_config(ckpt, path).seed == 3


def test_unsafe_checkpoint_is_refused_unless_allowed(tmp_path):
    path = tmp_path / "b.ckpt"
    torch.save({"state_dict": {}, "thing": NotATensor()}, path)
    with pytest.raises(ConfigError, match="allow_unsafe_checkpoint"):
        load_checkpoint(path)
    assert isinstance(load_checkpoint(path, allow_unsafe=True)["thing"], NotATensor)


def test_run_directory_resolves_to_best_then_last(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(b"x")
    assert resolve_checkpoint_path(tmp_path) == last
    best = tmp_path / "checkpoints" / "best.ckpt"
    best.write_bytes(b"x")
    (tmp_path / "results.json").write_text(json.dumps({"best_checkpoint": str(best)}))
    assert resolve_checkpoint_path(tmp_path) == best


def test_missing_paths_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="ckpt_path"):
        resolve_checkpoint_path(tmp_path / "nope.ckpt")
    with pytest.raises(ConfigError, match="ckpt_path"):
        resolve_checkpoint_path(tmp_path)


def test_config_falls_back_to_hydra_dir(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("seed: 7\n")
    (tmp_path / "checkpoints").mkdir()
    path = tmp_path / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": {}}, path)
    assert run_config(load_checkpoint(path), path).seed == 7


@pytest.mark.parametrize("content", [b"x" * 100, b"this is not a checkpoint", b"", "truncated"])
def test_unreadable_checkpoint_is_one_line_that_never_suggests_unsafe_loading(tmp_path, content):
    path = tmp_path / "bad.ckpt"
    if content == "truncated":
        torch.save({"state_dict": {"w": torch.ones(1000)}}, tmp_path / "good.ckpt")
        content = (tmp_path / "good.ckpt").read_bytes()[:600]
    path.write_bytes(content)
    for allow_unsafe in (False, True):
        with pytest.raises(ConfigError) as err:
            load_checkpoint(path, allow_unsafe=allow_unsafe)
        assert str(err.value) == (f"ckpt_path={path} is not a readable checkpoint: the file is truncated or corrupt, "
                                  "or was not written by torch.save")


def test_unsafe_checkpoint_message_names_the_objects_without_recommending_them(tmp_path):
    path = tmp_path / "b.ckpt"
    torch.save({"state_dict": {}, "thing": NotATensor()}, path)
    with pytest.raises(ConfigError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"ckpt_path={path} stores Python objects other than tensors and plain containers (")
    assert "NotATensor" in message and "weights_only" not in message and "\n" not in message
