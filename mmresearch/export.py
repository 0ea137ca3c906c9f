"""Export a trained model in its reference library's format: ``mmr-export ckpt_path=CKPT format=hf out=DIR``.

``format=hf`` (``model=clip`` checkpoints): ``DIR`` holds what ``transformers`` loads with
``AutoModel.from_pretrained(DIR)`` (config and weights, with this run's towers, projections, logit
scale and SigLIP bias), its tokenizer (``AutoTokenizer``) and image processor
(``AutoImageProcessor``) files; ``mmr-eval model=clip model.pretrained=DIR`` then reproduces
``mmr-eval ckpt_path=CKPT``'s test metrics.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List

from mmresearch.models.loading import load_model
from mmresearch.utils.errors import ConfigError

FORMATS = ("hf",)
USAGE = "usage: mmr-export ckpt_path=<checkpoint or run directory> format=hf out=<directory> [allow_unsafe_checkpoint=true]"


def export_model(ckpt_path: str, out: str, format: str = "hf", allow_unsafe: bool = False) -> Path:
    """Write the model of ``ckpt_path`` to ``out`` in ``format``; returns ``out``."""
    if format not in FORMATS:
        raise ConfigError(f"format={format!r} is not known; choose from {list(FORMATS)}")
    model, run_cfg, tokenizer = load_model(ckpt_path, allow_unsafe=allow_unsafe)
    if not hasattr(model, "to_transformers"):
        raise ConfigError(f"format=hf exports model=clip checkpoints (a transformers dual-tower model); {ckpt_path} is a {type(model).__name__}")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to_transformers().save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    from mmresearch.data.transforms import load_image_processor

    load_image_processor(model.pretrained, key="model.pretrained").save_pretrained(str(out_dir))
    return out_dir


def _arguments(argv: List[str]) -> Dict[str, str]:
    args: Dict[str, str] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in ("ckpt_path", "format", "out", "allow_unsafe_checkpoint"):
            raise SystemExit(f"mmr-export: {arg!r} is not one of ckpt_path=, format=, out=, allow_unsafe_checkpoint=\n{USAGE}")
        args[key] = value
    missing = [k for k in ("ckpt_path", "out") if k not in args]
    if missing:
        raise SystemExit(f"mmr-export: {', '.join(missing)} missing\n{USAGE}")
    return args


def main(argv: List[str] | None = None) -> None:
    args = _arguments(list(sys.argv[1:] if argv is None else argv))
    try:
        out = export_model(args["ckpt_path"], args["out"], args.get("format", "hf"), args.get("allow_unsafe_checkpoint", "false").lower() == "true")
    except ConfigError as err:
        raise SystemExit(f"mmr-export: {err}") from None
    print(f"exported to {out} (transformers: AutoModel.from_pretrained({str(out)!r}); mmr-eval model=clip model.pretrained={out})")


if __name__ == "__main__":
    main()
