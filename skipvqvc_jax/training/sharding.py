"""Data parallelism with jax.sharding: one `data` mesh axis over every device of every process, and the
few multi-process helpers the loop and the tasks share (placing a state, barriers, sharded means)."""

from __future__ import annotations

import itertools

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from skipvqvc_jax.core.errors import ConfigError


def make_mesh() -> Mesh:
  return Mesh(np.array(jax.devices()), ('data',))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`."""
  return NamedSharding(mesh, P('data'))


def stack_sharded(mesh: Mesh) -> NamedSharding:
  """Batches stacked on a leading axis (steps of one call): the second (batch) axis split over `data`."""
  return NamedSharding(mesh, P(None, 'data'))


def local_batch_size(global_batch: int) -> int:
  """This process's share of the global batch; the batch must split evenly over every device."""
  devices = jax.device_count()
  if global_batch % devices:
    raise ConfigError(
      f'batch_size {global_batch} does not split over {devices} devices ({global_batch} / '
      f'{devices} = {global_batch / devices:g} per device): set --config.batch_size to a multiple '
      f'of {devices} ({devices * max(1, round(global_batch / devices))}), or '
      f'--config.per_device_batch_size=N for a global batch of N x {devices}'
    )
  return global_batch // jax.process_count()


def global_batch(mesh: Mesh, local: dict) -> dict:
  """Assembles each process's local numpy batch into global arrays sharded over `data`."""
  return _from_local(batch_sharded(mesh), {k: np.asarray(v) for k, v in local.items()})


def global_batches(mesh: Mesh, local: list[dict]) -> dict:
  """Like `global_batch`, for several steps' local batches of one shape, stacked on a leading axis."""
  # One step's batch gains its leading axis as a view: no copy on the host before the transfer.
  stacked = {
    k: np.stack([b[k] for b in local]) if len(local) > 1 else np.asarray(local[0][k])[None]
    for k in local[0]
  }
  return _from_local(stack_sharded(mesh), stacked)


def _from_local(sharding: NamedSharding, local: dict) -> dict:
  """Each process's arrays -> global arrays with `sharding`."""
  if jax.process_count() == 1:  # the whole batch is here: one transfer of every array together
    return jax.device_put(local, sharding)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def place(tree, mesh: Mesh):
  """Replicates a tree of host values onto every device of the mesh (works across processes)."""
  target = replicated(mesh)

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, target, lambda index: x[index])

  return jax.tree.map(put, tree)


def abstract_like(tree, mesh: Mesh):
  """Shapes and dtypes of `tree`, replicated over the mesh: a restore target."""
  target = replicated(mesh)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=target), tree)


# How long a process waits at a barrier for the others (process 0 may be preprocessing a corpus).
BARRIER_SECONDS = 3600
_barriers = itertools.count()  # every process passes the same barriers in the same order


def sync(name: str) -> None:
  """Waits until every process reaches the barrier `name` (nothing to wait for in one process).

  A barrier of the coordination service, not a collective: a collective gives up when a peer is 30 s
  late (the CPU collectives' context), and before the first step peers can be minutes apart."""
  if jax.process_count() == 1:
    return
  try:  # jax's private coordination client: the only barrier with a timeout of our choosing
    from jax._src import distributed  # pylint: disable=import-outside-toplevel

    client = distributed.global_state.client
  except (ImportError, AttributeError):  # moved in a later jax: the public collective instead
    client = None
  if client is None or not hasattr(client, 'wait_at_barrier'):
    multihost_utils.sync_global_devices(name)
  else:
    client.wait_at_barrier(f'{name}-{next(_barriers)}', timeout_in_ms=BARRIER_SECONDS * 1000)


def same_everywhere(value: int) -> int:
  """Process 0's `value` in every process (a collective: every process calls it at the same step)."""
  if jax.process_count() == 1:
    return value
  return int(multihost_utils.broadcast_one_to_all(np.int64(value)))


def mean_over_batches(step, batches: list[dict], mesh: Mesh) -> dict:
  """The mean of `step(index, global_batch)`'s metrics over fixed local batches, as floats."""
  totals: dict[str, float] = {}
  for i, local in enumerate(batches):
    for k, v in jax.device_get(step(i, global_batch(mesh, local))).items():
      totals[k] = totals.get(k, 0.0) + float(v) / len(batches)
  return totals
