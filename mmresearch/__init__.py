"""mmresearch: vision-language representation learning with Lightning and Hydra."""

__version__ = "0.1.0"

from pathlib import Path as _Path

#: the Hydra config directory (conf/ beside the package)
CONFIG_DIR = str(_Path(__file__).resolve().parents[1] / "conf")

# the ${mmr.*} resolvers the configs use (run names, sweep groups, log versions)
from mmresearch.utils import resolvers as _resolvers  # noqa: E402,F401
