"""The entry points' console: each listed third-party notice is dropped (and only it: the same text
from another module, and other warnings, still show), log lines follow a swapped stdout."""

import io
import logging
import sys
import warnings

import pytest

from mmresearch.utils import console

# one real example of every notice: (text, category, module it is raised from; or logger name)
EXAMPLES = {
    console.NOTICES[0]: ("'set_vital' is deprecated, please do not call", UserWarning, "torchdata.stateful_dataloader.stateful_dataloader"),
    console.NOTICES[1]: ("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and treespec.is_leaf()` instead.",
                         FutureWarning, "lightning.pytorch.utilities._pytree"),
    console.NOTICES[2]: ("Precision bf16-mixed is not supported by the model summary.  Estimated model size in MB will not be accurate.",
                         UserWarning, "lightning.pytorch.utilities.model_summary.model_summary"),
    console.NOTICES[3]: ("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger](https://pypi.org/project/litlogger/)",
                         None, "lightning.pytorch.utilities.rank_zero"),
    console.NOTICES[4]: ("Trainer already configured with model summary callbacks: [<class 'PartsSummary'>]. Skipping setting a default `ModelSummary` callback.",
                         None, "lightning.pytorch.utilities.rank_zero"),
}


@pytest.fixture
def quiet():
    """quiet_third_party() inside saved warning filters; its logger filters removed afterwards."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        console.quiet_third_party()
        yield caught
    for name in console.LIGHTNING_INFO:
        logger = logging.getLogger(name)
        for f in [f for f in logger.filters if isinstance(f, console._DropNotices)]:
            logger.removeFilter(f)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _warn(text, category, module):
    warnings.warn_explicit(text, category, f"{module.replace('.', '/')}.py", 1, module=module)


def test_every_notice_has_a_reason_and_an_example():
    assert set(EXAMPLES) == set(console.NOTICES)
    assert all(len(n.why) > 30 for n in console.NOTICES)


def test_each_notice_is_dropped_and_only_from_its_source(quiet):
    for text, category, module in (e for e in EXAMPLES.values() if e[1] is not None):
        _warn(text, category, module)
        _warn(text, category, "mmresearch.somewhere")  # the same text raised elsewhere is kept
    _warn("The `srun` command is available on your system but is not used.", UserWarning, "lightning.fabric.plugins.environments.slurm")
    shown = [(str(w.message), w.category) for w in quiet]
    warnings_kept = [e for e in EXAMPLES.values() if e[1] is not None]
    assert len(shown) == len(warnings_kept) + 1
    assert shown[-1][0].startswith("The `srun` command")


def test_lightning_tips_are_dropped_from_its_log_and_its_other_lines_kept(quiet):
    records = _Records()
    for name in console.LIGHTNING_INFO:
        logging.getLogger(name).addHandler(records)
    try:
        for name in console.LIGHTNING_INFO:  # whichever Lightning package logs it
            for text, category, logger in EXAMPLES.values():
                if category is None:
                    logging.getLogger(name).warning(text)
            logging.getLogger(name).warning("GPU available: False, used: False")
    finally:
        for name in console.LIGHTNING_INFO:
            logging.getLogger(name).removeHandler(records)
    assert records.messages == ["GPU available: False, used: False"] * len(console.LIGHTNING_INFO)


def test_console_handler_writes_to_stdout_as_it_is_at_each_record(monkeypatch):
    handler = console.ConsoleHandler(stream="ignored")
    handler.setFormatter(console.ConsoleFormatter("%(message)s"))
    swapped = io.StringIO()
    monkeypatch.setattr(sys, "stdout", swapped)  # what a live progress bar does
    handler.emit(logging.LogRecord("mmresearch.train", logging.INFO, __file__, 1, "epoch 0 | val/rsum 1.0", None, None))
    handler.emit(logging.LogRecord("mmresearch.data", logging.WARNING, __file__, 1, "low disk", None, None))
    assert swapped.getvalue() == "epoch 0 | val/rsum 1.0\nWARNING [mmresearch.data] low disk\n"
