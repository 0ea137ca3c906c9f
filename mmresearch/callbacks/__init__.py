"""Lightning callbacks of mmresearch."""
