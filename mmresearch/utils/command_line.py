"""The command line of ``mmr-train`` / ``mmr-eval``, checked before Hydra runs the job.

Hydra answers a key that does not exist (``trainer.max_epoch=3``) with advice to add it with
``+``. :func:`checked_command_line` composes the config with the command line's overrides first
(Hydra's own parser and composition, so group options, ``+key=``/``++key=``/``~key`` and sweeps
mean what they mean to Hydra) and answers such a key with one line naming the key it probably
meant, and exit status 2. Everything else, valid or not, goes on to Hydra unchanged.

``mmr-eval`` also takes ``data.*`` and ``model.*`` keys of the *evaluated run's* config, which its
own config does not have: :func:`pass_to_run_config` passes them on as ``++data.<key>=...`` (unless
a data option is chosen, ``data=coco``: then ``data.*`` keys belong to that option's config); they
are checked against the run's config once the checkpoint is read
(:mod:`mmresearch.utils.eval_config`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import re
import sys
from typing import Any, Callable, List, Optional, Sequence

from mmresearch.utils.config_checks import unknown_key_message

#: group-option combinations of a sweep composed at most (each takes ~0.3 s)
MAX_COMPOSITIONS = 16


def _parse(argv: Sequence[str]) -> Optional[tuple]:
    """``(Hydra's parsed arguments, parsed overrides)``; None where there is nothing to check here
    (help, shell completion, another config directory, arguments Hydra itself will refuse)."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # Hydra prints its own usage error
            args = get_args_parser().parse_args(list(argv))
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except (Exception, SystemExit):
        return None
    if args.help or args.hydra_help or args.info or args.shell_completion or args.experimental_rerun or args.config_dir or args.config_path:
        return None
    return args, overrides


def _not_overridable(err: Exception) -> Optional[str]:
    """The key of Hydra's "Could not override 'key'" for a key that is not in the config."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    match = re.match(r"Could not override '([^']+)'", str(err))
    return match.group(1) if match and isinstance(err.__cause__, (ConfigAttributeError, ConfigKeyError)) else None


def misspelled_override(config_name: str, argv: Sequence[str]) -> Optional[str]:
    """The one-line message for the first command-line key (of ``argv``, without the program)
    that is not in the composed config ``config_name``, or None.

    Sweeps are composed once per combination of the swept group options (up to
    :data:`MAX_COMPOSITIONS`; other swept keys take their first value), since a key may exist
    under one option and not under another."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException

    from mmresearch import CONFIG_DIR

    parsed = _parse(argv)
    if parsed is None:
        return None
    args, overrides = parsed
    name = args.config_name or config_name
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        options: List[List[str]] = []
        for o in overrides:
            if not o.is_sweep_override():
                options.append([o.input_line])
            elif o.value_type is not None and o.value_type.name == "INTERVAL_SWEEP":
                options.append([f"{o.get_key_element()}=null"])
            else:
                values = list(o.sweep_string_iterator())
                group = o.package is not None or bool(loader.get_group_options(o.key_or_group))
                options.append([f"{o.get_key_element()}={v}" for v in (values if group else values[:1])])
        for lines in itertools.islice(itertools.product(*options), MAX_COMPOSITIONS):
            try:
                compose(config_name=name, overrides=list(lines))
                continue
            except ConfigCompositionException as err:
                key = _not_overridable(err)
            except Exception:
                return None  # Hydra reports it
            if key is None:
                return None
            return unknown_key_message(key, _compose_without(compose, name, lines, overrides, key))
    return None


def _compose_without(compose: Callable, name: str, lines: Sequence[str], overrides: Sequence[Any], key: str) -> Any:
    """The config composed without the overrides of ``key`` (where the suggestion is looked up);
    without any plain key override when that still fails; an empty config as the last resort."""
    from omegaconf import OmegaConf

    kept = [line for line, o in zip(lines, overrides) if o.key_or_group != key]
    groups = [line for line, o in zip(lines, overrides) if "." not in o.key_or_group and o.type.name == "CHANGE"]
    for attempt in (kept, groups):
        try:
            return compose(config_name=name, overrides=list(attempt))
        except Exception:
            continue
    return OmegaConf.create({})


def pass_to_run_config(argv: Sequence[str], keys: Sequence[str]) -> List[str]:
    """``argv`` with plain overrides of ``<key>.*`` (``key`` in ``keys``) turned into ``++<key>.*``:
    keys of the evaluated run's config. ``data.*`` stays as it is when a ``data=<option>`` is given."""
    parsed = _parse(argv)
    if parsed is None:
        return list(argv)
    _, overrides = parsed
    chosen = {o.key_or_group for o in overrides if o.key_or_group in keys}  # an option of that group
    passed = {o.input_line for o in overrides if o.type.name == "CHANGE" and "." in o.key_or_group
              and o.key_or_group.split(".")[0] in keys and o.key_or_group.split(".")[0] not in chosen}
    return [f"++{arg}" if arg in passed else arg for arg in argv]


def checked_command_line(config_name: str, run_config_keys: Sequence[str] = ()) -> Callable:
    """Decorator for a ``@hydra.main`` function: checks ``sys.argv`` (:func:`misspelled_override`;
    one line on stderr and exit status 2) and passes ``run_config_keys`` on
    (:func:`pass_to_run_config`) before Hydra reads it. A call with arguments (a config passed
    in) goes straight through."""

    def decorate(hydra_main: Callable) -> Callable:
        @functools.wraps(hydra_main)
        def main(*args: Any, **kwargs: Any) -> Any:
            if args or kwargs:
                return hydra_main(*args, **kwargs)
            argv = sys.argv
            sys.argv = [argv[0], *pass_to_run_config(argv[1:], run_config_keys)] if run_config_keys else list(argv)
            try:
                message = misspelled_override(config_name, sys.argv[1:])
                if message is not None:
                    print(message, file=sys.stderr)
                    raise SystemExit(2)
                return hydra_main()
            finally:
                sys.argv = argv

        return main

    return decorate


def command_line_keys(group: str) -> List[str]:
    """The paths inside ``group`` that this Hydra job's command line set (``data.root=/c`` and
    ``++data.root=/c`` give ``root``); none outside a Hydra job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not HydraConfig.initialized():
        return []
    overrides = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    return [o.key_or_group[len(group) + 1:] for o in overrides if o.key_or_group.startswith(f"{group}.")]
