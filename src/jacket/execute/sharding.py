"""Beyond one device: sharded Jacobian accumulation and data-parallel gradients on a JAX mesh.

The unit tangents of forward accumulation (the columns), the unit cotangents of reverse
accumulation (the rows) and the examples of a batch are independent of each other, so the work
splits across devices with no change to the mathematics. jacket does not communicate by itself:
it places arrays with ``NamedSharding`` and lets ``jax.jit`` partition the computation, so the
same code runs on one CPU, several GPUs, or several hosts after ``jax.distributed.initialize()``.

* ``chain.jacobian(params, x, order, mesh=mesh)`` (``_executor.py``): every TAN/ADJ seed batch is
  split across all devices of the mesh (padded to a multiple of the device count; padding
  dropped afterwards); for a batch of examples, the batch is split instead.
* ``data_parallel(devices)``: a 1-D mesh with a ``"batch"`` axis and the shardings for the
  common case (batch split, parameters replicated), for ``jacket.value_and_grad`` under jit.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["DataParallel", "data_parallel", "make_mesh", "pad_rows", "seed_sharding", "shard_batch",
           "replicate", "split_examples"]


def make_mesh(devices: int | None = None, axis: str = "batch") -> Mesh:
    """A 1-D mesh over the first ``devices`` devices (default: all of them)."""
    available = jax.devices()
    count = len(available) if devices is None else int(devices)
    if not 1 <= count <= len(available):
        raise ValueError(f"asked for {devices} devices but JAX sees {len(available)} "
                         f"({available[0].platform}); on a CPU, simulate more with "
                         f"XLA_FLAGS=--xla_force_host_platform_device_count=N set before JAX is imported")
    return Mesh(available[:count], (axis,))


def seed_sharding(mesh: Mesh) -> NamedSharding:
    """Rows (seed vectors, or examples) split over every axis of the mesh, columns whole."""
    return NamedSharding(mesh, PartitionSpec(tuple(mesh.axis_names), None))


def pad_rows(a, multiple: int):
    """``a`` with zero rows appended so that its row count is a multiple of ``multiple``."""
    pad = (-a.shape[0]) % multiple
    if pad == 0:
        return a
    return jnp.concatenate([a, jnp.zeros((pad,) + a.shape[1:], a.dtype)], axis=0)


def replicate(tree, mesh: Mesh):
    """Place every leaf of ``tree`` whole on every device of ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def split_examples(x, mesh: Mesh):
    """``x`` padded to a multiple of the device count and split along its leading axis."""
    return jax.device_put(pad_rows(x, mesh.size), NamedSharding(mesh, PartitionSpec(tuple(mesh.axis_names))))


class DataParallel(NamedTuple):
    """A mesh and its two shardings: ``batch`` (leading axis split) and ``replicated``."""

    mesh: Mesh
    batch: NamedSharding
    replicated: NamedSharding

    def put_batch(self, *arrays):
        """Place arrays with their leading (batch) axis split; its size must divide evenly."""
        return tuple(shard_batch(self, a) for a in arrays)

    def put_replicated(self, tree):
        return jax.device_put(tree, self.replicated)


def data_parallel(devices: int | None = None) -> DataParallel:
    """Mesh and shardings for data-parallel training: batch split, parameters replicated.

    ``jacket.value_and_grad`` needs no change: jit it, place the batch with ``put_batch`` and the
    parameters with ``put_replicated``; XLA inserts the all-reduce of the parameter gradients.
    """
    mesh = make_mesh(devices, "batch")
    return DataParallel(mesh, NamedSharding(mesh, PartitionSpec("batch")), NamedSharding(mesh, PartitionSpec()))


def shard_batch(dp: DataParallel, a):
    """Place ``a`` with its leading axis split over ``dp.mesh`` (size must divide evenly)."""
    size = dp.mesh.size
    if a.shape[0] % size:
        raise ValueError(f"a batch of {a.shape[0]} examples does not split evenly over {size} devices; "
                         f"use a batch size that is a multiple of {size}")
    return jax.device_put(a, dp.batch)
