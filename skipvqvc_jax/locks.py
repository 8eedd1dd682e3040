"""One training run per workdir: the workdir lock, on a disk (`WorkdirLock`) or in a bucket
(`ObjectLock`); `for_workdir` picks the one a workdir needs."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
import uuid

from absl import logging

from skipvqvc_jax import storage
from skipvqvc_jax.errors import TrainingError

TRAINING = 'train in another --workdir'


def for_workdir(workdir: str, elsewhere: str = TRAINING):
  """The lock of a workdir (or a preprocessing output folder); `elsewhere`: the advice a second run
  gets besides waiting."""
  lock = ObjectLock(workdir) if storage.is_url(workdir) else WorkdirLock(workdir)
  lock.elsewhere = elsewhere
  return lock


def _owner() -> str:
  return f'pid {os.getpid()} on {socket.gethostname()} since {time.strftime("%Y-%m-%d %H:%M:%S")}'


class WorkdirLock:
  """One training run per workdir: {workdir}/.lock holds the owner's pid, host and start time, and the
  owner holds an exclusive flock on it, which the kernel drops when the process dies however it dies.
  A second run is refused naming the owner; a lock left by a dead process is taken over, saying so."""

  elsewhere = TRAINING

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
        f': wait for it to finish, or {self.elsewhere}'
      ) from None
    f.seek(0)
    previous = f.read().strip()
    if previous:
      logging.warning('taking over the lock of a run that is gone (%s)', previous)
    f.seek(0)
    f.truncate()
    f.write(_owner())
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


class ObjectLock:
  """The workdir lock in object storage, where no lock dies with its process: {workdir}/.lock is an
  object created only if absent (on GCS a generation precondition, ifGenerationMatch=0, so of two
  runs starting at once exactly one creates it), naming its owner and renewed every RENEW_SECONDS
  by a thread of the owner. A lock whose owner is a dead process of this host, or that was not
  renewed for STALE_SECONDS (its owner's VM is gone), is taken over, saying so; any other is refused
  naming its owner. Released by deleting it."""

  RENEW_SECONDS = 60.0
  STALE_SECONDS = 600.0
  elsewhere = TRAINING

  def __init__(self, workdir: str):
    self.workdir = storage.abspath(workdir)
    self.path = storage.join(self.workdir, '.lock')
    self._token = None
    self._stop = threading.Event()
    self._thread = None

  def _record(self) -> bytes:
    return json.dumps(
      dict(
        owner=self._owner,
        token=self._token,
        host=socket.gethostname(),
        pid=os.getpid(),
        renewed=time.time(),
      )
    ).encode()

  def _read(self) -> dict | None:
    try:
      return json.loads(storage.read_bytes(self.path))
    except FileNotFoundError:
      return None
    except (
      ValueError
    ):  # a lock cut short (its writer died mid-upload cannot happen; a hand edit can)
      return dict(owner='unreadable lock', renewed=0.0)

  def _stale(self, held: dict) -> str | None:
    """Why `held` may be taken over, or None."""
    if held.get('host') == socket.gethostname() and isinstance(held.get('pid'), int):
      try:
        os.kill(held['pid'], 0)
      except ProcessLookupError:
        return 'its process is gone'
      except PermissionError:
        pass
    age = time.time() - float(held.get('renewed', 0.0))
    if age > self.STALE_SECONDS:
      return f'not renewed for {age:.0f} s'
    return None

  def acquire(self) -> None:
    self._token, self._owner = uuid.uuid4().hex, _owner()
    for _ in range(2):
      if storage.create_only(self.path, self._record()):
        held = self._read()  # a store without preconditions: the last writer wins; see who did
        if held and held.get('token') == self._token:
          break
      else:
        held = self._read()
        if held is None:
          continue  # released between the two calls: try again
        reason = self._stale(held)
        if reason:
          logging.warning(
            'taking over the lock of a run that is gone (%s: %s)', held.get('owner'), reason
          )
          storage.remove(self.path)
          continue
      raise TrainingError(
        f'{self.workdir} is in use by another run ({(held or {}).get("owner", "starting")})'
        f': wait for it to finish, or {self.elsewhere} (a lock not renewed for '
        f'{self.STALE_SECONDS / 60:.0f} minutes is taken over)'
      )
    else:
      raise TrainingError(f'{self.workdir}: could not take its lock; try again')
    self._stop.clear()
    self._thread = threading.Thread(target=self._renew, name='workdir-lock', daemon=True)
    self._thread.start()

  def _renew(self) -> None:
    while not self._stop.wait(self.RENEW_SECONDS):
      try:
        held = self._read()
        if not held or held.get('token') != self._token:
          logging.error(
            'the lock of %s was taken over by %s: another run now trains in this workdir',
            self.workdir,
            (held or {}).get('owner', 'nobody'),
          )
          return
        with storage.open(self.path, 'wb') as f:
          f.write(self._record())
      except Exception as e:  # pylint: disable=broad-except  (a network blip: renew next time)
        logging.warning('could not renew the lock of %s (%s)', self.workdir, e)

  def release(self) -> None:
    if self._token is None:
      return
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    held = self._read()
    if held and held.get('token') == self._token:
      storage.remove(self.path)
    self._token = None

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()
