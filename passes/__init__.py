"""Relax passes of tvm-mulayer: each a tvm.transform.Pass (IRModule -> IRModule), one per file.

In pipeline order: SplitChannels (placement and channel split from a Plan), LiftWeights
(weights become device-resident parameters), then TVM's LegalizeOps/FuseOps/FuseTIR,
PropagateDevices (repairs devices and targets that legalization loses), the schedules,
PrepackWeights (the CPU kernels' weight repacks, run once at compile time) and
OrderForOverlap (GPU work first, copies last), and PooledCopies (copies into pooled buffers, no
sync).
"""

from .lift_weights import LiftWeights
from .order_for_overlap import OrderForOverlap
from .pooled_copies import PooledCopies
from .prepack_weights import PrepackWeights
from .propagate_devices import PropagateDevices
from .split_channels import SplitChannels

__all__ = ["SplitChannels", "LiftWeights", "PropagateDevices", "PrepackWeights", "OrderForOverlap", "PooledCopies"]
