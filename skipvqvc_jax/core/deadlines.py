"""Waits on storage that end: each with a deadline, a line every 30 s saying what is awaited, and a
calling thread that stays responsive to signals meanwhile.

A write to a bucket that cannot be reached blocks inside C++ (tensorstore, orbax's writer) or in
retry loops (gcsfs) for as long as they like, and Python runs no signal handler in a thread blocked
there: a run would hang with SIGTERM and Ctrl-C ignored. `bounded` runs such a call in a helper thread
and waits for it in one-second slices. A call that misses its deadline is abandoned, still blocked:
the process can then only end with `os._exit` (Python joins its threads at exit), which
`usage.one_line_errors` does after printing its line when `abandoned` is not empty.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from absl import logging

from skipvqvc_jax.core.errors import StorageError

T = TypeVar('T')

LINE_SECONDS = 30.0  # how often a wait says what it waits for
abandoned: list[str] = []  # what this process gave up waiting for (its threads are still blocked)


def bounded(call: Callable[[], T], what: str, timeout: float, advice: str) -> T:
  """call()'s result, or its exception; StorageError naming `what` and `advice` when it has not
  returned after `timeout` seconds. A line every LINE_SECONDS (or half the timeout, if shorter) says
  what is awaited."""
  every = min(LINE_SECONDS, timeout / 2)
  outcome: dict[str, object] = {}

  def run():
    try:
      outcome['value'] = call()
    except BaseException as e:  # pylint: disable=broad-except  (handed to the waiting thread)
      outcome['error'] = e

  helper = threading.Thread(target=run, name=f'waiting for {what}', daemon=True)
  start = time.monotonic()
  helper.start()
  said = 0
  while helper.is_alive():
    helper.join(1.0)  # short slices: the signal handlers of the calling thread run between them
    waited = time.monotonic() - start
    if helper.is_alive() and waited >= timeout:
      abandoned.append(what)
      raise StorageError(f'{what}: no answer in {timeout:.0f} s; {advice}')
    if helper.is_alive() and waited >= (said + 1) * every:
      said += 1
      logging.warning('still waiting for %s (%.0f s; giving up at %.0f s)', what, waited, timeout)
  if 'error' in outcome:
    raise outcome['error']
  return outcome.get('value')
