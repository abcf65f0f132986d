"""stress: a stress-test and driver-regression reproduction suite for GPU desktops."""

__version__ = "0.1.0"
