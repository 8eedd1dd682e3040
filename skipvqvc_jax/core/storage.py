"""Paths that may be URLs: every run path goes through here, so a workdir, a feature folder or an
output folder can live in a bucket (`gs://`, and any other fsspec scheme whose library is installed:
`s3://` with s3fs, `memory://` in tests) as well as on a local disk.

Local paths go to `os` exactly as before (same modes, same atomic renames); URLs go to fsspec, the
file layer of the JAX ecosystem's object stores (gcsfs for `gs://`; orbax and tensorstore speak
`gs://` on their own). The functions are named after the `os.path` ones they stand for.

Object storage differs from a disk in three ways this project relies on (RELIABILITY.md):
- no rename: an object appears whole when its single upload completes, so a safe write is one upload
  of the finished bytes (`fileio.atomic_write`); a "folder" moved (`rename`) is copied, then deleted;
- no folders: `makedirs` does nothing, a folder exists while an object lies under it;
- no shared listing cache: listings are not cached, as several processes write the same workdir.
"""

from __future__ import annotations

import builtins
import functools
import os
import posixpath
import shutil
import tempfile

from skipvqvc_jax.core import deadlines
from skipvqvc_jax.core.errors import StorageError, UserError

# The package that gives fsspec each scheme (what a missing one's error says to install).
_SCHEME_PACKAGES = {'gs': 'gcsfs', 'gcs': 'gcsfs', 's3': 's3fs'}


def is_url(path) -> bool:
  """A path with a scheme (gs://bucket/run); file:// and plain paths are local."""
  path = os.fspath(path)
  return '://' in path and not path.startswith('file://')


@functools.cache
def _filesystem(protocol: str):
  try:
    import fsspec  # pylint: disable=import-outside-toplevel

    # Listings are not cached: other processes (the other hosts of a pod) write the same folders.
    # gcsfs: each request given up after a minute (its default waits for ever on a silent server).
    timeouts = {'requests_timeout': 60} if _SCHEME_PACKAGES.get(protocol) == 'gcsfs' else {}
    return fsspec.filesystem(
      protocol, use_listings_cache=False, skip_instance_cache=True, **timeouts
    )
  except (ImportError, ValueError) as e:
    package = _SCHEME_PACKAGES.get(protocol, f'the fsspec implementation of {protocol}://')
    raise UserError(
      f'{protocol}:// paths need {package} ({e}): pip install "skipvqvc_jax[gcs]"'
      if package == 'gcsfs'
      else f'{protocol}:// paths need {package} ({e}); install it'
    ) from None


def check_reachable(path, timeout: float = 60.0) -> None:
  """For a URL: StorageError in one line, within `timeout` s, when its bucket does not exist, cannot
  be reached, or the credentials named for it are missing; nothing for a local path. A program calls
  it before anything else touches the bucket (gcsfs would print a traceback per retry first)."""
  path = os.fspath(path)
  if not is_url(path):
    return
  protocol = path.split('://', 1)[0]
  credentials = os.environ.get('GOOGLE_APPLICATION_CREDENTIALS')
  if protocol in ('gs', 'gcs') and credentials and not os.path.isfile(credentials):
    raise StorageError(
      f'{path}: GOOGLE_APPLICATION_CREDENTIALS names {credentials}, which does not exist: point it '
      f'at a service account key, or unset it and run `gcloud auth application-default login`'
    )
  fs, inner = filesystem(path)
  bucket = inner.split('/', 1)[0]
  advice = 'check the network, the credentials and the name'
  try:
    deadlines.bounded(lambda: fs.info(bucket), f'bucket {protocol}://{bucket}', timeout, advice)
  except FileNotFoundError:
    raise StorageError(
      f'{path}: bucket {protocol}://{bucket} does not exist, or this account cannot see it: '
      f'create it or check its name'
    ) from None
  except StorageError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (every client's errors: aiohttp, auth, ...)
    reason = ' '.join(str(e).split())[:240] or type(e).__name__
    raise StorageError(
      f'{path}: cannot reach bucket {protocol}://{bucket} ({reason}); {advice}'
    ) from None


def filesystem(path: str):
  """(fsspec file system, its path) of a URL."""
  protocol = path.split('://', 1)[0]
  import fsspec.core  # pylint: disable=import-outside-toplevel

  return _filesystem(protocol), fsspec.core.strip_protocol(path)


def _url(path: str, inner: str) -> str:
  """The URL of `inner` (a file system path as fsspec lists it), in the scheme of `path`."""
  return path.split('://', 1)[0] + '://' + inner.lstrip('/')


# ---- names -------------------------------------------------------------------------------------------


def join(path, *parts) -> str:
  path = os.fspath(path)
  return posixpath.join(path, *parts) if is_url(path) else os.path.join(path, *parts)


def abspath(path) -> str:
  path = os.fspath(path)
  return path.rstrip('/') if is_url(path) else os.path.abspath(path)


def isabs(path) -> bool:
  return is_url(path) or os.path.isabs(path)


def dirname(path) -> str:
  path = os.fspath(path)
  if is_url(path):
    scheme, rest = path.rstrip('/').split('://', 1)
    return scheme + '://' + posixpath.dirname(rest) if '/' in rest else path
  return os.path.dirname(path)


def basename(path) -> str:
  path = os.fspath(path)
  return posixpath.basename(path.rstrip('/')) if is_url(path) else os.path.basename(path)


def relpath(path, start) -> str:
  """`path` relative to `start`; both URLs in one bucket, or both local."""
  if is_url(path) or is_url(start):
    path, start = abspath(path), abspath(start)
    if path == start:
      return '.'
    if not path.startswith(start + '/'):
      raise ValueError(f'{path} is not inside {start}')
    return path[len(start) + 1 :]
  return os.path.relpath(path, start)


def is_inside(path, folder) -> bool:
  path, folder = abspath(path), abspath(folder)
  return path.startswith(folder + ('/' if is_url(folder) else os.sep))


def realpath(path) -> str:
  return abspath(path) if is_url(path) else os.path.realpath(path)


# ---- queries -----------------------------------------------------------------------------------------


def exists(path) -> bool:
  if is_url(path):
    fs, inner = filesystem(path)
    return fs.exists(inner)
  return os.path.exists(path)


def isfile(path) -> bool:
  if is_url(path):
    fs, inner = filesystem(path)
    return fs.isfile(inner)
  return os.path.isfile(path)


def isdir(path) -> bool:
  if is_url(path):
    fs, inner = filesystem(path)
    return fs.isdir(inner)
  return os.path.isdir(path)


def listdir(path) -> list[str]:
  """The names in a folder (FileNotFoundError when there is none, as os.listdir)."""
  if is_url(path):
    fs, inner = filesystem(path)
    if not fs.isdir(inner):
      raise FileNotFoundError(path)
    return [posixpath.basename(p.rstrip('/')) for p in fs.ls(inner, detail=False)]
  return os.listdir(path)


def sizes(folder) -> dict[str, int]:
  """{name: size} of the files directly in a folder, in one listing (one request on object storage)."""
  if is_url(folder):
    fs, inner = filesystem(folder)
    return {
      posixpath.basename(e['name'].rstrip('/')): int(e.get('size') or 0)
      for e in fs.ls(inner, detail=True)
      if e.get('type') == 'file'
    }
  with os.scandir(folder) as entries:
    return {e.name: e.stat().st_size for e in entries if e.is_file()}


def getsize(path) -> int:
  if is_url(path):
    fs, inner = filesystem(path)
    return int(fs.size(inner))
  return os.path.getsize(path)


def free_bytes(path) -> int | None:
  """Free space under `path` (its nearest existing folder); None on object storage (no such limit)."""
  if is_url(path):
    return None
  path = os.path.abspath(path)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  return shutil.disk_usage(path).free


# ---- changes -----------------------------------------------------------------------------------------


def open(path, mode: str = 'r', **kwargs):  # noqa: A001  (the os-like name is the point)
  if is_url(path):
    fs, inner = filesystem(path)
    return fs.open(inner, mode, **kwargs)
  return builtins.open(path, mode, **kwargs)


def read_bytes(path) -> bytes:
  with open(path, 'rb') as f:
    return f.read()


def makedirs(path) -> None:
  """A local folder and its parents; nothing on object storage, where folders are only prefixes."""
  if not is_url(path):
    os.makedirs(path, exist_ok=True)


def remove(path) -> None:
  if is_url(path):
    fs, inner = filesystem(path)
    fs.rm_file(inner)
  else:
    os.remove(path)


def rmtree(path) -> None:
  if is_url(path):
    fs, inner = filesystem(path)
    if fs.exists(inner):
      fs.rm(inner, recursive=True)
  else:
    shutil.rmtree(path, ignore_errors=True)


def rename(source, destination) -> None:
  """Moves a file or folder. Local: one atomic rename. Object storage has no rename: every object is
  copied, then the originals are deleted (a crash in between leaves both, never neither)."""
  if is_url(source) != is_url(destination):
    raise ValueError(f'cannot move {source} to {destination}: one is a URL and one is not')
  if is_url(source):
    fs, inner = filesystem(source)
    target = filesystem(destination)[1]
    if fs.isdir(inner):
      for item in fs.find(inner):
        fs.copy(item, target + item[len(inner) :])
      fs.rm(inner, recursive=True)
    else:
      fs.copy(inner, target)
      fs.rm_file(inner)
  else:
    os.rename(source, destination)


def copy(source, destination) -> None:
  """Copies a file between any two places (local or URL)."""
  if is_url(source) or is_url(destination):
    with open(source, 'rb') as src, open(destination, 'wb') as dst:
      shutil.copyfileobj(src, dst, 1 << 20)
  else:
    shutil.copy2(source, destination)


def upload(local_file: str, destination: str) -> None:
  """One upload of a finished local file: on object storage the object appears whole or not at all."""
  fs, inner = filesystem(destination)
  fs.put_file(local_file, inner)


def create_only(path: str, data: bytes) -> bool:
  """Writes a new object only if none is there (a generation precondition on GCS: ifGenerationMatch=0);
  False when one already is."""
  fs, inner = filesystem(path)
  try:
    fs.pipe_file(inner, data, mode='create')
  except FileExistsError:
    return False
  except OSError as e:  # gcsfs reports a failed precondition (HTTP 412) as an OSError
    if '412' in str(e) or 'precondition' in str(e).lower():
      return False
    raise
  return True


def mirror(folder: str, local: str, names=None) -> int:
  """Copies the files directly in a URL `folder` into the local folder `local`, skipping those already
  there at the same size; returns how many were downloaded. `names`: only these (when present).
  Downloads run concurrently, and each file is renamed into place whole, so an interrupted mirror
  leaves no half file and the next one resumes."""
  fs, inner = filesystem(folder)
  os.makedirs(local, exist_ok=True)
  wanted = [
    name
    for name, size in sizes(folder).items()
    if (names is None or name in names)
    and not (
      os.path.isfile(os.path.join(local, name))
      and os.path.getsize(os.path.join(local, name)) == size
    )
  ]
  if not wanted:
    return 0
  # Concurrent whole-object reads (fsspec's batched cat), a few hundred at a time, each file written
  # under a temporary name and renamed into place.
  for start in range(0, len(wanted), 256):
    batch = wanted[start : start + 256]
    contents = fs.cat([posixpath.join(inner, name) for name in batch])
    contents = {posixpath.basename(path): data for path, data in contents.items()}
    for name in batch:
      data = contents[name]
      fd, tmp = tempfile.mkstemp(prefix='.' + name + '.', suffix='.tmp', dir=local)
      try:
        with os.fdopen(fd, 'wb') as f:
          f.write(data)
        os.replace(tmp, os.path.join(local, name))
      except BaseException:
        os.remove(tmp)
        raise
  return len(wanted)


def find(folder) -> list[str]:
  """Every file under a folder, as paths (URLs for a URL), sorted."""
  if is_url(folder):
    fs, inner = filesystem(folder)
    return sorted(_url(folder, p) for p in fs.find(inner))
  return sorted(os.path.join(root, name) for root, _, names in os.walk(folder) for name in names)
