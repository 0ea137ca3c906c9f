"""What the entry points (``mmr-train``, ``mmr-eval``) show: known third-party notices filtered,
Lightning's log lines and Python warnings routed through Hydra's job logging (so ``<job>.log`` in the
run directory holds what the console showed), log lines printed above a live progress bar.

Only the entry points call :func:`setup_console`; tests and library use keep every warning. Each
filtered notice is listed once, in :data:`NOTICES`, with why dropping it loses nothing.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple, Type

#: the loggers of Lightning's ``rank_zero_info`` (device, precision, tips, checkpoint restores):
#: lightning_utilities logs to the one of whichever Lightning package was imported last
LIGHTNING_INFO = tuple(f"{package}.utilities.rank_zero" for package in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric"))


@dataclass(frozen=True)
class Notice:
    """A third-party notice dropped from the console: a Python warning (``category`` raised from a
    module matching ``module``) or, with ``loggers``, a log record of one of those loggers;
    ``message`` is a regular expression matched at the start of the text."""

    message: str
    why: str
    category: Type[Warning] = UserWarning
    module: str = ""
    loggers: Tuple[str, ...] = ()


NOTICES = (
    Notice(r"'set_vital' is deprecated", category=UserWarning, module=r"torchdata\.",
           why="torchdata's StatefulDataLoader calls torch.set_vital (a removed telemetry hook, now a no-op) at every "
               "loader start; nothing for a user to change and no effect on the data"),
    Notice(r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning, module=r"lightning\.pytorch\.utilities\._pytree",
           why="Lightning's own pytree copy builds a LeafSpec, which torch deprecated; Lightning's to fix, results unaffected"),
    Notice(r"Precision (bf16|16)-mixed is not supported by the model summary", module=r"lightning\.pytorch\.utilities\.model_summary",
           why="only Lightning's default summary (when callbacks.model_summary is removed) says it; mixed precision keeps "
               "float32 weights, so the 32-bit size it falls back to is the right one"),
    Notice(r"💡 Tip:", loggers=LIGHTNING_INFO,
           why="advertising for Lightning's cloud services (litlogger, litmodels), not about the run"),
    Notice(r"Trainer already configured with model summary callbacks", loggers=LIGHTNING_INFO,
           why="says that Lightning's default model summary is replaced by ours (callbacks.model_summary), as intended"),
)


class _DropNotices(logging.Filter):
    """Drops the records of one logger that match the ``message`` of its notices."""

    def __init__(self, patterns: List[str]) -> None:
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


def quiet_third_party() -> None:
    """Install the filters of :data:`NOTICES` (warnings filters, and one filter per named logger);
    calling it again adds nothing."""
    by_logger: Dict[str, List[str]] = {}
    for notice in NOTICES:
        if not notice.loggers:
            warnings.filterwarnings("ignore", message=notice.message, category=notice.category, module=notice.module)
        for name in notice.loggers:
            by_logger.setdefault(name, []).append(notice.message)
    for name, patterns in by_logger.items():
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, _DropNotices)]:
            logger.removeFilter(old)
        logger.addFilter(_DropNotices(patterns))


class _StripTrailingNewline(logging.Filter):
    """A captured warning's text ends with a newline: the log line should not."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = record.getMessage().rstrip("\n"), ()
        return True


def route_to_job_log() -> None:
    """Send Lightning's log lines and Python warnings through the root logger's handlers (Hydra's
    console and ``<job>.log``). Lightning's packages print with stderr handlers of their own when
    imported before logging is configured; those are removed, so each line appears once, in the
    log file too. No-op without root handlers."""
    if not logging.getLogger().handlers:
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(handler)
        logger.propagate = True
    logging.captureWarnings(True)
    warnings_logger = logging.getLogger("py.warnings")
    if not any(isinstance(f, _StripTrailingNewline) for f in warnings_logger.filters):
        warnings_logger.addFilter(_StripTrailingNewline())


def setup_console() -> None:
    """Everything above, for an entry point's ``main()`` (after Hydra configured logging)."""
    quiet_third_party()
    route_to_job_log()


def log_files() -> List[Path]:
    """The files the root logger writes (Hydra's ``<run dir>/<job>.log``)."""
    return [Path(h.baseFilename) for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


class ConsoleHandler(logging.StreamHandler):
    """A handler on ``sys.stdout`` as it is at each record, not as it was at set-up: a live progress
    bar (Rich) swaps ``sys.stdout`` to print lines above the bar instead of through it. Hydra's
    ``stream`` argument is accepted and ignored."""

    def __init__(self, stream=None) -> None:  # noqa: ARG002 (Hydra's job_logging passes it)
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


class ConsoleFormatter(logging.Formatter):
    """Information as the bare message (the log file keeps times and logger names); warnings and
    errors with their level and logger."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno < logging.WARNING:
            return text
        # a captured Python warning already starts with its file, line and category
        return f"{record.levelname}: {text}" if record.name == "py.warnings" else f"{record.levelname} [{record.name}] {text}"
