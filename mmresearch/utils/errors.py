"""One error type for bad configuration, so users see one clear message at start-up."""

from __future__ import annotations

import difflib
from typing import Iterable


class ConfigError(ValueError):
    """A config value is unknown, of the wrong type or inconsistent with another one.

    The message always names the config key (for example ``image_encoder.name``) and, where
    there is a closed set, the allowed values.
    """


def unknown_choice(key: str, value: object, allowed: Iterable[str], limit: int = 20) -> ConfigError:
    """Build the error for ``key=value`` where ``value`` is not one of ``allowed``.

    Lists close matches first, then up to ``limit`` allowed values.
    """
    allowed = sorted(set(allowed))
    close = difflib.get_close_matches(str(value), allowed, n=5, cutoff=0.6)
    shown = ", ".join(allowed[:limit]) + (f", ... ({len(allowed)} in all)" if len(allowed) > limit else "")
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return ConfigError(f"{key}={value!r} is not known.{hint} Allowed values: {shown}")


def check_choice(key: str, value: object, allowed: Iterable[str]) -> None:
    """Raise ConfigError unless ``value`` is one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise unknown_choice(key, value, allowed)
