"""One training run per workdir: the workdir lock, on a disk (`WorkdirLock`) or in a bucket
(`ObjectLock`); `for_workdir` picks the one a workdir needs."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

import filelock
from absl import logging

from skipvqvc_jax.core import deadlines, storage
from skipvqvc_jax.core.errors import TrainingError

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
  """One training run per workdir on a disk: {workdir}/.lock is held with `filelock` (an flock on
  Unix, a byte-range lock on Windows), which the operating system drops when its process dies however
  it dies; {workdir}/.lock.owner names the holder (pid, host, start) and is emptied on release. A
  second run is refused naming the owner; a lock left by a dead process is taken over, saying so."""

  elsewhere = TRAINING

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, '.lock')
    self.owner_path = self.path + '.owner'
    self._lock = None

  def _owner_text(self) -> str:
    try:
      with open(self.owner_path, encoding='utf-8') as f:
        return f.read().strip()
    except FileNotFoundError:
      return ''

  def _write_owner(self, text: str) -> None:
    with open(self.owner_path, 'w', encoding='utf-8') as f:
      f.write(text)

  def acquire(self) -> None:
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    lock = filelock.FileLock(self.path, timeout=0)
    try:
      lock.acquire()
    except filelock.Timeout:
      raise TrainingError(
        f'{os.path.dirname(self.path)} is in use by another run ({self._owner_text() or "starting"})'
        f': wait for it to finish, or {self.elsewhere}'
      ) from None
    previous = self._owner_text()  # a holder that released its lock emptied it
    if previous:
      logging.warning('taking over the lock of a run that is gone (%s)', previous)
    self._write_owner(_owner())
    self._lock = lock

  def release(self) -> None:
    if self._lock is None:
      return
    try:
      self._write_owner('')  # an empty owner file is a free workdir
    except OSError as e:  # a workdir made read-only: the next run takes over, as from a dead run
      logging.info('left the owner of %s as it was (%s)', self.path, e)
    finally:
      self._lock.release()  # the lock file stays: deleting it would race a waiter
      self._lock = None

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
    """Deletes the lock object, within half a minute: storage that no longer answers leaves it for the
    next run to take over (as a dead run's lock is), instead of holding the process."""
    if self._token is None:
      return
    self._stop.set()
    try:
      deadlines.bounded(self._remove, f'the release of the lock of {self.workdir}', 30, 'left')
    except Exception as e:  # pylint: disable=broad-except  (storage faults of every kind)
      logging.info('the lock of %s was left for the next run to take over (%s)', self.workdir, e)
    self._token = None

  def _remove(self) -> None:
    if self._thread is not None:
      self._thread.join()
    held = self._read()
    if held and held.get('token') == self._token:
      storage.remove(self.path)

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()
