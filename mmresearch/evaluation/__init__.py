"""mmresearch."""
