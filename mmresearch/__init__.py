"""mmresearch: vision-language representation learning with Lightning and Hydra."""

__version__ = "0.1.0"
