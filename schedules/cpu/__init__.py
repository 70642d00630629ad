"""CPU (llvm) schedule rules."""

from .conv2d import Conv2d


def default_rules():
    """CPU rules in the order they are tried."""
    return [Conv2d()]
