"""compress: make trained models cheaper to run, and prove it."""

__version__ = "0.1.0"
