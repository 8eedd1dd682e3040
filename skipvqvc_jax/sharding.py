"""Data parallelism with jax.sharding: one `data` mesh axis over every device of every process."""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh() -> Mesh:
  return Mesh(np.array(jax.devices()), ('data',))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`."""
  return NamedSharding(mesh, P('data'))


def local_batch_size(global_batch: int) -> int:
  """This process's share of the global batch; the batch must split evenly over every device."""
  devices = jax.device_count()
  if global_batch % devices:
    raise ValueError(f'batch_size {global_batch} does not split over {devices} devices; '
                     f'use a multiple of {devices}')
  return global_batch // jax.process_count()


def global_batch(mesh: Mesh, local: dict) -> dict:
  """Assembles each process's local numpy batch into global arrays sharded over `data`."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}
