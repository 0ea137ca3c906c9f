"""mmresearch: vision-language representation learning with Lightning and Hydra."""

__version__ = "0.1.0"

# the ${mmr.*} resolvers the configs use (run names, sweep groups, log versions)
from mmresearch.utils import resolvers as _resolvers  # noqa: E402,F401
