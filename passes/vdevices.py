"""Comparing vdevices: the passes and the build agree on what "the same device" means."""

from __future__ import annotations

from tvm import relax


def vdevice_key(vdevice) -> tuple:
    return (str(vdevice.target), int(vdevice.vdevice_id), str(vdevice.memory_scope))


def vdevice_index(vdevices, vdevice) -> int:
    """Position of `vdevice` in the module's vdevice list (= the VM's device list)."""
    key = vdevice_key(vdevice)
    for index, candidate in enumerate(vdevices):
        if vdevice_key(candidate) == key:
            return index
    raise ValueError(f"vdevice {vdevice} is not declared in the module's global_infos")


def first_vdevice(ty):
    """The vdevice of a tensor type, or of a tuple type's first field that has one."""
    if isinstance(ty, relax.TensorType):
        return ty.vdevice
    if isinstance(ty, relax.TupleType):
        for field in ty.fields:
            found = first_vdevice(field)
            if found is not None:
                return found
    return None
