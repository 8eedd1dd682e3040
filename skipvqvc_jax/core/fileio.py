"""Writing files so that no reader ever sees half of one, and reading the JSON the project writes.

Any path may be a URL (`storage`): there the finished file is uploaded in one piece, which object
storage makes visible whole or not at all (it has no rename to make a local write atomic)."""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable

import numpy as np

from skipvqvc_jax.core import storage
from skipvqvc_jax.core.errors import CorpusError


def _read_umask() -> int:
  """The process's umask, without changing it (os.umask can only set it, which races other threads)."""
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith('Umask:'):
          return int(line.split()[1], 8)
  except OSError:
    pass
  mask = os.umask(0o022)  # elsewhere: read it by setting it, and put it back at once
  os.umask(mask)
  return mask


def public_mode(directory: bool = False) -> int:
  """The mode open() or mkdir() would give a new file or folder: 0o666 (0o777) less the umask, so
  colleagues on a shared server read what the project writes wherever the umask lets them."""
  return (0o777 if directory else 0o666) & ~_read_umask()


def user_cache(*parts: str) -> str:
  """A folder of this user's cache: $XDG_CACHE_HOME (else ~/.cache)/skipvqvc_jax/<parts>."""
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'skipvqvc_jax', *parts)


def atomic_write(path: str, write: Callable[[str], None]) -> None:
  """Writes via a temporary file in the same folder and renames it: no half-written file is visible.

  The file gets the usual mode for a new file under the umask (mkstemp's own is 0600). A URL: the
  file is written to a local temporary file, then uploaded as one object."""
  if storage.is_url(path):
    fd, tmp = tempfile.mkstemp(prefix='.' + storage.basename(path) + '.', suffix='.tmp')
    os.close(fd)
    try:
      write(tmp)
      storage.upload(tmp, path)
    finally:
      os.remove(tmp)
    return
  folder = os.path.dirname(os.path.abspath(path))
  tmp = None
  try:
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    os.close(fd)
    write(tmp)
    os.chmod(tmp, public_mode())
    os.replace(tmp, path)
  except OSError as e:
    _remove(tmp)
    # Named by the file the caller writes, not the temporary one or its folder (a full disk, a
    # read-only folder: errors.file_system_fault makes it the user's one line).
    raise OSError(e.errno, e.strerror or str(e), path) from e
  except BaseException:
    _remove(tmp)
    raise


def _remove(tmp: str | None) -> None:
  if tmp is not None and os.path.exists(tmp):
    os.remove(tmp)


def save_npy(path: str, array: np.ndarray) -> None:
  # Serialised in memory first: numpy's own short-write error carries no errno, a file's write does
  # (ENOSPC: the disk is full).
  buffer = io.BytesIO()
  np.save(buffer, array, allow_pickle=False)

  def write(tmp):
    with open(tmp, 'wb') as f:
      f.write(buffer.getbuffer())

  atomic_write(path, write)


def save_json(path: str, obj) -> None:
  def write(tmp):
    with open(tmp, 'w') as f:
      json.dump(obj, f, indent=1, sort_keys=False)
      f.write('\n')

  atomic_write(path, write)


def save_text(path: str, text: str) -> None:
  def write(tmp):
    with open(tmp, 'w') as f:
      f.write(text)

  atomic_write(path, write)


def load_json(path: str):
  try:
    with storage.open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise CorpusError(
      f'{path} is not valid JSON ({e.msg} at line {e.lineno}); fix or delete it'
    ) from None
