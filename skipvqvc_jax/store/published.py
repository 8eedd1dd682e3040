"""Published weights fetched once into the user's cache, checked, ported and reused: the original's
pretrained MelGAN (`skipvqvc-fetch melgan`, or the first `--vocoder=melgan`).

The checksum is the file's git blob id in its repository's tree (sha1 of `blob <size>\\0<bytes>`):
pinned from the tree without the file. A download goes to a temporary name beside the cache and
becomes a model directory only once its size and checksum hold and it ports; nothing half-written is
left in the cache. Offline, one line says where to put the file by hand.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request

from skipvqvc_jax import models
from skipvqvc_jax.core import fileio
from skipvqvc_jax.core.errors import CheckpointError, ConfigError, UserError
from skipvqvc_jax.store import checkpoints, porting, torch_files


@dataclasses.dataclass(frozen=True)
class Published:
  """A published checkpoint: where it is, how to check it, and what it ports to."""

  name: str
  repository: str
  commit: str
  path: str  # in the repository
  blob: str  # its git blob id at `commit`
  model: str  # models.build's name
  licence: str
  max_bytes: int  # a bound on the file's size: a download longer than this is refused

  @property
  def url(self) -> str:
    """Its download address; $SKIPVQVC_<NAME>_URL replaces it (a mirror, or a test's server)."""
    default = f'https://raw.githubusercontent.com/{self.repository}/{self.commit}/{self.path}'
    return os.environ.get(f'SKIPVQVC_{self.name.upper()}_URL', default)

  @property
  def page(self) -> str:
    return f'https://github.com/{self.repository}/blob/{self.commit}/{self.path}'

  @property
  def filename(self) -> str:
    return os.path.basename(self.path)


PUBLISHED = {
  p.name: p
  for p in (
    # The multi-speaker MelGAN the original's notebooks load through torch.hub (trained on VCTK and
    # more, 22050 Hz, 80 mels, hop 256: the features preprocess.py makes).
    Published(
      name='melgan',
      repository='descriptinc/melgan-neurips',
      commit='6488045bfba1975602288de07a58570c7b4d66ea',
      path='models/multi_speaker.pt',
      blob='c6dc2e2ab5be6478352deb465c5b584e1d4ba25a',
      model='melgan',
      licence='MIT',
      # Its generator's state dict is 17,064,200 bytes in 126 tensors (models.build('melgan')), a
      # legacy .pt of it 17,085,975 (tests/store/test_published.py checks this bound against both).
      max_bytes=18_500_000,
    ),
  )
}


def git_blob_id(path_or_bytes: str | bytes) -> str:
  """sha1 of `blob <size>\\0` + the file's bytes: what git names the file by."""
  if isinstance(path_or_bytes, str):
    with open(path_or_bytes, 'rb') as f:
      path_or_bytes = f.read()
  return hashlib.sha1(f'blob {len(path_or_bytes)}\0'.encode() + path_or_bytes).hexdigest()


def _port(published: Published, directory: str, data: bytes, where: str) -> None:
  """The checked bytes of `published` ported into the model directory `directory`."""
  found = git_blob_id(data)
  if found != published.blob:
    raise ConfigError(
      f'{where} is not {published.page}: its git blob id is {found}, not {published.blob}'
      f' (a different or damaged file; nothing was kept)'
    )
  try:
    state_dict = porting.state_dict_of(torch_files.load(data))
    model = models.build(
      published.model, **models.get_class(published.model).sizes_from_torch(state_dict)
    )
    porting.load_state_dict(model, state_dict)
    if checkpoints.is_model_dir(directory):  # --file again: replace the ported copy
      shutil.rmtree(directory)
    checkpoints.save_model(directory, model)
  except CheckpointError:
    if not checkpoints.is_model_dir(directory):  # not another process's finished copy
      raise
  except UserError as e:
    raise ConfigError(f'{where}: {e}') from None


def model_dir(name: str) -> str:
  """Where the ported model of PUBLISHED[name] is kept."""
  return fileio.user_cache('published', name)


def by_hand(published: Published) -> str:
  """Where a copy downloaded by hand is looked for."""
  return fileio.user_cache('downloads', published.filename)


# A download's limits: it must end within DOWNLOAD_SECONDS, and once RATE_GRACE_SECONDS have passed
# keep an average of MIN_BYTES_PER_SECOND (a server dripping a byte every few seconds is refused in
# half a minute, not waited on for years). A progress line every PROGRESS_SECONDS.
DOWNLOAD_SECONDS = 900.0
RATE_GRACE_SECONDS = 30.0
MIN_BYTES_PER_SECOND = 16 << 10
PROGRESS_SECONDS = 5.0


def _download(url: str, out, limit: int, log) -> None:
  """`url`'s bytes into the open file `out`, at most `limit` of them, within the limits above; a
  cut, slow or oversized transfer is a ConfigError."""
  start = said = time.monotonic()
  got = 0
  try:
    with urllib.request.urlopen(url, timeout=30) as response:
      expected = response.headers.get('Content-Length')
      if expected is not None and int(expected) > limit:
        raise ConfigError(
          f'{url} announces {int(expected)} bytes; the pinned file has under {limit}'
        )
      total = f' of {int(expected) / 1e6:.1f} MB' if expected else ''
      log(f'downloading {url}{total}')
      while chunk := response.read1(1 << 20):
        got += len(chunk)
        if got > limit:
          raise ConfigError(f'{url} sent over {limit} bytes; the pinned file has fewer')
        out.write(chunk)
        now = time.monotonic()
        _check_pace(url, got, now - start)
        if now - said >= PROGRESS_SECONDS:
          log(f'  {got / 1e6:.1f}{total or " MB"} ({got / (now - start) / 1e3:.0f} kB/s)')
          said = now
  except ConfigError:
    raise
  except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
    reason = getattr(e, 'reason', None) or e
    raise ConfigError(f'cannot download {url} ({reason})') from None
  if expected is not None and got != int(expected):
    raise ConfigError(f'the download of {url} was cut short ({got} of {expected} bytes)')


def _check_pace(url: str, got: int, seconds: float) -> None:
  if seconds > DOWNLOAD_SECONDS:
    raise ConfigError(f'the download of {url} took over {DOWNLOAD_SECONDS:.0f} s ({got} bytes)')
  if seconds > RATE_GRACE_SECONDS and got < MIN_BYTES_PER_SECOND * seconds:
    raise ConfigError(
      f'{url} sends {got / seconds:.0f} bytes/s, under the {MIN_BYTES_PER_SECOND} a download needs'
    )


def fetch(name: str = 'melgan', source: str | None = None, log=None) -> str:
  """The model directory of PUBLISHED[name], fetched, checked and ported on first use.

  source: a local copy of the file (else the one in `by_hand`, else a download); log: where the
  lines saying what is downloaded and kept go (default: stderr)."""
  log = log or (lambda line: print(line, file=sys.stderr))
  if name not in PUBLISHED:
    raise ConfigError(f'nothing published is called {name!r}; known: {", ".join(PUBLISHED)}')
  published, directory = PUBLISHED[name], model_dir(name)
  if checkpoints.is_model_dir(directory) and source is None:
    return directory
  source = source or (by_hand(published) if os.path.isfile(by_hand(published)) else None)
  os.makedirs(os.path.dirname(directory), exist_ok=True)
  # A download goes into a file without a name (O_TMPFILE on Linux): however the process ends, even by
  # SIGKILL, nothing of it is left in the cache.
  with tempfile.TemporaryFile(dir=os.path.dirname(directory)) as downloaded:
    if source is None:
      try:
        _download(published.url, downloaded, published.max_bytes, log)
      except ConfigError as e:
        raise ConfigError(
          f'{e}: download {published.filename} by hand from {published.page} and put it at '
          f'{by_hand(published)} (or give skipvqvc-fetch {name} --file=PATH)'
        ) from None
      downloaded.seek(0)
      data, where = downloaded.read(), f'the download of {published.url}'
    elif not os.path.isfile(source):
      raise ConfigError(f'{source}: no such file')
    else:
      with open(source, 'rb') as f:
        data, where = f.read(published.max_bytes + 1), source
    _port(published, directory, data, where)
  log(f'{name}: {directory} ({published.licence} licence, {published.page})')
  return directory
