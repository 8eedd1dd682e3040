"""Joining a multi-process run (a pod slice, a GPU cluster, CPU processes in tests):
`jax.distributed.initialize` with a deadline that says what it waits for."""

from __future__ import annotations

import os
import sys
import threading
import time

import jax
from absl import logging


def wanted(coordinator_address: str | None, config) -> bool:
  """Multi-process when a flag, the config or the environment (JAX_COORDINATOR_ADDRESS) says so."""
  return bool(
    coordinator_address
    or os.environ.get('JAX_COORDINATOR_ADDRESS')
    or (config is not None and config.distributed)
  )


def join(
  coordinator_address: str | None,
  num_processes: int | None,
  process_id: int | None,
  timeout_seconds: int,
) -> None:
  """jax.distributed.initialize, saying what it waits for: at once, then every 10 s, and after
  `timeout_seconds` one `error:` line and exit 1 (JAX alone waits 5 minutes in silence, then
  aborts). Must precede any other use of JAX's backends."""
  # Collectives between CPU processes (tests, CPU clusters); accelerators use their own.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  address = coordinator_address or os.environ.get('JAX_COORDINATOR_ADDRESS', '(from the cluster)')
  who = f'process {process_id}' if process_id is not None else 'this process'
  count = f'{num_processes} processes' if num_processes else 'every process'
  logging.info(
    '%s: waiting for %s to join at coordinator %s (up to %d s)',
    who,
    count,
    address,
    timeout_seconds,
  )
  joined = threading.Event()

  def watch():
    start = time.time()
    while not joined.wait(min(10, timeout_seconds)):
      waited = time.time() - start
      if waited >= timeout_seconds:
        print(
          f'error: {who}: not every one of {count} joined at coordinator {address} within '
          f'{timeout_seconds} s (--join_timeout): start the others with the same '
          f'--coordinator_address and --num_processes, each with its own --process_id',
          file=sys.stderr,
          flush=True,
        )
        os._exit(1)  # pylint: disable=protected-access  (initialize cannot be interrupted)
      logging.info('%s: still waiting for %s at %s (%.0f s)', who, count, address, waited)

  threading.Thread(target=watch, daemon=True).start()
  jax.distributed.initialize(
    coordinator_address,
    num_processes,
    process_id,
    initialization_timeout=timeout_seconds + 60,  # ours says it first, in one line
  )
  joined.set()
  logging.info('%s: all %s joined', who, count)
  if jax.default_backend() == 'cpu':
    # Gloo's collectives: with programs that one process loaded from the persistent cache and the
    # other compiled, both processes hung at their first collective (seen on this project's CI
    # machine, with the code of 0.1 too). CPU processes compile instead.
    jax.config.update('jax_enable_compilation_cache', False)
