"""Loading weight files into encoders with strict key checking and a readable report.

One path for every encoder: :func:`read_state_dict` (a file or a checkpoint directory), then
:func:`apply_key_map` (rename the checkpoint's keys to the model's), then :func:`load_checked`
(compare keys and shapes, raise or warn, load what matches). :func:`load_weights` chains the three.

A :class:`LoadReport` lists the model's keys the checkpoint lacks (``missing``), the checkpoint's
keys the model lacks (``unexpected``) and keys present in both with different shapes
(``mismatched``: never loaded). Errors are :class:`ConfigError` naming the config key (for
example ``image_encoder.checkpoint_path``) and the file.

A regex key map in YAML: ``key_map: {'^module\\.backbone\\.': ''}``. Hydra's command line does not
allow ``^`` or ``\\`` in dict keys: ``'image_encoder.key_map={module.backbone.:""}'`` (unanchored,
``.`` matching any character) does the same for ordinary keys.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from mmresearch.utils.errors import ConfigError

log = logging.getLogger(__name__)

StateDict = Dict[str, Tensor]
#: ``None``, regex -> replacement (``re.sub``, applied in order to every key), or
#: ``(state_dict, model) -> state_dict``.
KeyMap = Union[None, Mapping[str, str], Callable[[StateDict, nn.Module], Mapping[str, Tensor]]]

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
#: weight files looked for, in order, in a checkpoint directory
DIR_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
#: top-level entries of a training checkpoint that hold the state dict
WRAPPER_KEYS = ("state_dict", "model", "module")
SHOWN = 10


@dataclass
class LoadReport:
    """Result of matching a state dict against a module.

    ``mismatched`` holds ``(key, checkpoint shape, model shape)``; ``ignored`` the checkpoint's
    keys dropped on purpose (classifier heads, non-persistent buffers, ``ignore_unexpected``).
    """

    source: str
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)
    loaded: int = 0

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def counts(self) -> str:
        return (f"{self.loaded} loaded, {len(self.missing)} missing, {len(self.unexpected)} unexpected, "
                f"{len(self.mismatched)} shape-mismatched, {len(self.ignored)} ignored")

    def summary(self, limit: int = SHOWN) -> str:
        """Counts, then the first ``limit`` names of each kind of problem (one line each)."""
        lines = [f"{self.source}: {self.counts()}"]
        for name, keys in (("missing (in the model, not in the checkpoint)", self.missing),
                           ("unexpected (in the checkpoint, not in the model)", self.unexpected)):
            if keys:
                lines.append(f"  {name}: {_first(keys, limit)}")
        if self.mismatched:
            shown = [f"{k} checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched[:limit]]
            more = f", ... ({len(self.mismatched)} in all)" if len(self.mismatched) > limit else ""
            lines.append(f"  shape-mismatched (not loaded): {', '.join(shown)}{more}")
        hint = _prefix_hint(self.missing, self.unexpected)
        if hint:
            lines.append(f"  hint: {hint}")
        return "\n".join(lines)


def _first(keys: Sequence[str], limit: int) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _prefix_hint(missing: Sequence[str], unexpected: Sequence[str]) -> Optional[str]:
    """A key_map that would fix a checkpoint whose keys differ from the model's by a prefix."""
    if not missing or not unexpected:
        return None
    for extra, short, regex in ((unexpected, set(missing), lambda p: {f"^{re.escape(p)}": ""}),
                                (missing, set(unexpected), lambda p: {"^": p})):
        for k in extra[:50]:
            stem = max((m for m in short if k.endswith("." + m)), key=len, default=None)
            if stem is None:
                continue
            prefix = k[: len(k) - len(stem)]
            hits = sum(1 for e in extra if e.startswith(prefix) and e[len(prefix):] in short)
            if hits >= max(1, len(short) // 2):
                return f"the keys differ by the prefix {prefix!r}: try key_map={regex(prefix)}"
    return None


def _ckpt_error(key: str, path: Path, what: str) -> ConfigError:
    return ConfigError(f"{key}={str(path)!r}: {what}")


def read_state_dict(path: Union[str, os.PathLike], key: str = "checkpoint_path") -> StateDict:
    """Tensors of a weight file or checkpoint directory, as ``{name: tensor}`` on the CPU.

    Files: ``.safetensors``, or ``.pth/.pt/.bin/.ckpt`` (``torch.load(weights_only=True)``; a
    ``state_dict``/``model``/``module`` entry of a training checkpoint is unwrapped). A directory
    must hold ``model.safetensors`` (or its shard index) or ``pytorch_model.bin``. ``key`` names
    the config key in errors.
    """
    path = Path(os.path.expanduser(str(path)))
    if not path.exists():
        raise _ckpt_error(key, path, "no such file or directory")
    if path.is_dir():
        found = next((path / n for n in DIR_FILES if (path / n).is_file()), None)
        if found is None:
            raise _ckpt_error(key, path, f"the directory holds none of {', '.join(DIR_FILES)}")
        path = found
    if path.name.endswith(".safetensors.index.json"):
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        out: StateDict = {}
        for shard in shards:
            out.update(read_state_dict(path.parent / shard, key))
        return out
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path), device="cpu"))
    if path.suffix not in TORCH_SUFFIXES:
        raise _ckpt_error(key, path, f"unknown weight file type (use .safetensors or one of {', '.join(TORCH_SUFFIXES)})")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # pickled objects beyond tensors, or a corrupt file
        raise _ckpt_error(key, path, f"torch.load(weights_only=True) failed ({err}); save a plain state dict "
                          "(torch.save(model.state_dict(), ...)) or a .safetensors file") from err
    while isinstance(obj, Mapping):
        inner = next((obj[w] for w in WRAPPER_KEYS if isinstance(obj.get(w), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise _ckpt_error(key, path, f"holds a {type(obj).__name__}, not a state dict")
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise _ckpt_error(key, path, f"is not a state dict: non-tensor entries {_first(bad, SHOWN)}")
    return dict(obj)


def apply_key_map(state_dict: Mapping[str, Tensor], key_map: KeyMap, model: nn.Module,
                  key: str = "key_map") -> StateDict:
    """Rename the checkpoint's keys: ``key_map`` is None, regex -> replacement, or a callable.

    Regexes apply in order to every key (``re.sub``); two keys renamed to one are an error.
    """
    if key_map is None:
        return dict(state_dict)
    if isinstance(key_map, Mapping):
        try:
            rules = [(re.compile(str(p)), "" if r is None else str(r)) for p, r in key_map.items()]
        except re.error as err:
            raise ConfigError(f"{key}: bad regex: {err}") from err
        out: StateDict = {}
        for k, v in state_dict.items():
            new = k
            for pattern, repl in rules:
                new = pattern.sub(repl, new)
            if new in out:
                raise ConfigError(f"{key}={dict(key_map)}: two checkpoint keys become {new!r} (one of them {k!r})")
            out[new] = v
        return out
    if callable(key_map):
        out = key_map(dict(state_dict), model)
        if not isinstance(out, Mapping):
            raise ConfigError(f"{key}: the hook {key_map!r} returned a {type(out).__name__}, not a state dict")
        return dict(out)
    raise ConfigError(f"{key} must be null, a mapping regex -> replacement or a callable; got {type(key_map).__name__}")


def _matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    compiled = [re.compile(p) for p in patterns]
    return lambda k: any(c.match(k) for c in compiled)


def compare_keys(module: nn.Module, state_dict: Mapping[str, Tensor], source: str = "<state dict>",
                 ignore_unexpected: Iterable[str] = (), ignore_missing: Iterable[str] = ()) -> LoadReport:
    """The :class:`LoadReport` of loading ``state_dict`` into ``module`` (loads nothing).

    ``ignore_*`` are regexes matched at the start of a key (``re.match``; a plain prefix such as
    ``"classifier."`` works). Non-persistent buffers of the module (``position_ids``) are ignored.
    """
    expected = module.state_dict()
    volatile = {n for n, _ in module.named_buffers()} - set(expected)
    drop_unexpected, drop_missing = _matcher(ignore_unexpected), _matcher(ignore_missing)
    report = LoadReport(source=source)
    for k, v in state_dict.items():
        if k in expected:
            if tuple(v.shape) != tuple(expected[k].shape):
                report.mismatched.append((k, tuple(v.shape), tuple(expected[k].shape)))
        elif k in volatile or drop_unexpected(k):
            report.ignored.append(k)
        else:
            report.unexpected.append(k)
    report.missing = [k for k in expected if k not in state_dict and not drop_missing(k)]
    report.loaded = sum(1 for k in state_dict if k in expected) - len(report.mismatched)
    return report


def enforce(report: LoadReport, strict: bool, key: str, hint: Optional[str] = None) -> None:
    """Log the report's counts (info); raise ConfigError (``strict``) or warn when it is not clean.

    ``hint`` ends the error message (default: use ``<group>.key_map`` or ``<group>.strict=false``).
    """
    log.info("%s=%s: %s", key, report.source, report.counts())
    if report.ignored:
        log.info("%s: dropped %d checkpoint keys the model does not use on purpose: %s", key, len(report.ignored),
                 _first(report.ignored, SHOWN))
    if report.clean:
        return
    group = key.rsplit(".", 1)[0]
    if strict:
        hint = hint or (f"Rename the checkpoint's keys with {group}.key_map (regex -> replacement, or a hook from "
                        f"mmresearch.modules.encoders.key_maps), or set {group}.strict=false to load what matches.")
        raise ConfigError(f"{key}: the checkpoint does not match the model\n{report.summary()}\n{hint}")
    log.warning("%s (strict=false, loading what matches):\n%s", key, report.summary())


def load_checked(module: nn.Module, state_dict: Mapping[str, Tensor], strict: bool, key: str,
                 ignore_unexpected: Iterable[str] = (), ignore_missing: Iterable[str] = (),
                 source: str = "<state dict>") -> LoadReport:
    """Load the keys of ``state_dict`` whose names and shapes match ``module``; return the report.

    With ``strict`` any missing, unexpected (after ``ignore_unexpected``) or shape-mismatched key
    raises :class:`ConfigError` naming ``key`` and ``source`` before anything is loaded; without
    it a warning lists them. Shape-mismatched keys are never loaded.
    """
    report = compare_keys(module, state_dict, source, ignore_unexpected, ignore_missing)
    enforce(report, strict, key)
    expected = module.state_dict()
    matching = {k: v for k, v in state_dict.items() if k in expected and tuple(v.shape) == tuple(expected[k].shape)}
    module.load_state_dict(matching, strict=False)
    return report


def load_weights(module: nn.Module, path: Union[str, os.PathLike], strict: bool, key: str, key_map: KeyMap = None,
                 ignore_unexpected: Iterable[str] = (), ignore_missing: Iterable[str] = ()) -> LoadReport:
    """:func:`read_state_dict` + :func:`apply_key_map` + :func:`load_checked`.

    ``key`` is the config key of the path (``image_encoder.checkpoint_path``); the key map's errors
    name ``<group>.key_map``.
    """
    state_dict = read_state_dict(path, key)
    state_dict = apply_key_map(state_dict, key_map, module, key=f"{key.rsplit('.', 1)[0]}.key_map")
    return load_checked(module, state_dict, strict, key, ignore_unexpected, ignore_missing, source=str(path))


def report_from_hf(info: Mapping[str, Any], model: nn.Module, source: str,
                   ignore_unexpected: Iterable[str] = ()) -> LoadReport:
    """A :class:`LoadReport` from ``from_pretrained(..., output_loading_info=True)``'s dict.

    transformers 5.x returns sets: ``missing_keys``, ``unexpected_keys``, ``mismatched_keys`` of
    ``(key, checkpoint shape, model shape)``, plus ``error_msgs``.
    """
    drop = _matcher(ignore_unexpected)
    unexpected = sorted(info.get("unexpected_keys") or ())
    mismatched = sorted((k, tuple(a), tuple(b)) for k, a, b in (info.get("mismatched_keys") or ()))
    report = LoadReport(source=source, missing=sorted(info.get("missing_keys") or ()),
                        unexpected=[k for k in unexpected if not drop(k)], mismatched=mismatched,
                        ignored=[k for k in unexpected if drop(k)])
    report.loaded = len(model.state_dict()) - len(report.missing) - len(mismatched)
    return report
