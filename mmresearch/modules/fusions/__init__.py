"""Fusion encoders: where image and text tokens meet."""
