"""shipledger: the immutable flight recorder of everything an enterprise ships."""

__version__ = "0.1.0"
