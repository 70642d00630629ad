"""Relax passes of tvm-mulayer: each a tvm.transform.Pass (IRModule -> IRModule), one per file."""

from .split_channels import SplitChannels

__all__ = ["SplitChannels"]
