"""One training run per workdir: the workdir lock."""

from __future__ import annotations

import fcntl
import os
import socket
import time

from absl import logging

from skipvqvc_jax.errors import TrainingError


class WorkdirLock:
  """One training run per workdir: {workdir}/.lock holds the owner's pid, host and start time, and the
  owner holds an exclusive flock on it, which the kernel drops when the process dies however it dies.
  A second run is refused naming the owner; a lock left by a dead process is taken over, saying so."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, '.lock')
    self._file = None

  def acquire(self) -> None:
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    f = open(self.path, 'a+')  # pylint: disable=consider-using-with  (held for the whole run)
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      f.seek(0)
      owner = f.read().strip()
      f.close()
      raise TrainingError(
        f'{os.path.dirname(self.path)} is in use by another run ({owner or "starting"})'
        f': wait for it to finish, or train in another --workdir'
      ) from None
    f.seek(0)
    previous = f.read().strip()
    if previous:
      logging.warning('taking over the lock of a run that is gone (%s)', previous)
    f.seek(0)
    f.truncate()
    f.write(
      f'pid {os.getpid()} on {socket.gethostname()} since {time.strftime("%Y-%m-%d %H:%M:%S")}'
    )
    f.flush()
    self._file = f

  def release(self) -> None:
    if self._file is not None:
      self._file.seek(0)
      self._file.truncate()  # an empty lock file is a free workdir (deleting it would race a waiter)
      fcntl.flock(self._file, fcntl.LOCK_UN)
      self._file.close()
      self._file = None

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()
