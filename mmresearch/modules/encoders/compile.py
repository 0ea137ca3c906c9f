"""``torch.compile`` of encoders, chosen per encoder in the config (``image_encoder.compile``).

An encoder only records its options at construction; :func:`compile_encoders` compiles it later
(from the LightningModule's ``configure_model``), in place with ``nn.Module.compile``, so that

* state-dict keys stay the same (no ``_orig_mod.`` prefix): checkpoints load with or without it;
* copies made at construction (ALBEF's momentum encoders, a deep copy) are compiled on their own
  and never call the online encoder's compiled forward.

Do not deep-copy an encoder after it is compiled: the copy would share the compiled function,
which calls the original module. ViLT, whose joint stack takes the encoders' layers rather than
the encoders, refuses ``compile``.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Union

from torch import nn

from mmresearch.utils.errors import ConfigError

#: the ``torch.compile`` arguments an encoder's ``compile`` mapping may set
COMPILE_ARGS = ("mode", "fullgraph", "dynamic", "backend", "options")

CompileSpec = Union[bool, None, Mapping[str, Any]]


def compile_options(spec: CompileSpec, key: str) -> Optional[dict]:
    """``None`` (off) or the ``torch.compile`` keyword arguments of a config value.

    Args:
        spec: ``false``/``null`` (off), ``true`` (torch's defaults) or a mapping of
            ``torch.compile`` arguments, e.g. ``{mode: max-autotune, dynamic: false}``.
        key: the config key, for the error message (``image_encoder.compile``).
    """
    if spec is None or spec is False:
        return None
    if spec is True:
        return {}
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - set(COMPILE_ARGS))
        if unknown:
            raise ConfigError(f"{key} has unknown torch.compile argument(s) {unknown}; allowed: {list(COMPILE_ARGS)}")
        return dict(spec)
    raise ConfigError(f"{key} must be true, false or a mapping of torch.compile arguments, got {spec!r}")


def compile_encoders(module: nn.Module) -> list[str]:
    """Compile, in place, every submodule of ``module`` whose ``compile_options`` is not None and
    which is not compiled yet; returns their names (``""`` for ``module`` itself)."""
    done = []
    for name, sub in module.named_modules():
        options = getattr(sub, "compile_options", None)
        if options is None or getattr(sub, "_compiled_call_impl", None) is not None:
            continue
        sub.compile(**options)
        done.append(name)
    return done


def keep_eager(module: nn.Module) -> list[str]:
    """Clear the compile request of every submodule not compiled yet (``mmr-eval compile=false``);
    returns their names."""
    cleared = []
    for name, sub in module.named_modules():
        if getattr(sub, "compile_options", None) is not None and getattr(sub, "_compiled_call_impl", None) is None:
            sub.compile_options = None
            cleared.append(name)
    return cleared
