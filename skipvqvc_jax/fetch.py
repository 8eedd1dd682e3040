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
import urllib.error
import urllib.request

from skipvqvc_jax import checkpoints, fileio, models, porting
from skipvqvc_jax.errors import CheckpointError, ConfigError, UserError


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
    ),
  )
}


def git_blob_id(path: str) -> str:
  """sha1 of `blob <size>\\0` + the file's bytes: what git names the file by."""
  digest = hashlib.sha1(f'blob {os.path.getsize(path)}\0'.encode())
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def model_dir(name: str) -> str:
  """Where the ported model of PUBLISHED[name] is kept."""
  return fileio.user_cache('published', name)


def by_hand(published: Published) -> str:
  """Where a copy downloaded by hand is looked for."""
  return fileio.user_cache('downloads', published.filename)


def _download(url: str, destination: str, log) -> None:
  """`url` -> the (new, temporary) file `destination`; a cut transfer is a ConfigError."""
  try:
    with urllib.request.urlopen(url, timeout=60) as response, open(destination, 'wb') as out:
      expected = response.headers.get('Content-Length')
      log(f'downloading {url}' + (f' ({int(expected) / 1e6:.1f} MB)' if expected else ''))
      shutil.copyfileobj(response, out, 1 << 20)
  except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
    reason = getattr(e, 'reason', None) or e
    raise ConfigError(f'cannot download {url} ({reason})') from None
  got = os.path.getsize(destination)
  if expected is not None and got != int(expected):
    raise ConfigError(f'the download of {url} was cut short ({got} of {expected} bytes)')


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
  with tempfile.TemporaryDirectory(prefix=f'.{name}.', dir=os.path.dirname(directory)) as tmp:
    if source is None:
      source = os.path.join(tmp, published.filename)
      try:
        _download(published.url, source, log)
      except ConfigError as e:
        raise ConfigError(
          f'{e}: download {published.filename} by hand from {published.page} and put it at '
          f'{by_hand(published)} (or give skipvqvc-fetch {name} --file=PATH)'
        ) from None
    elif not os.path.isfile(source):
      raise ConfigError(f'{source}: no such file')
    found = git_blob_id(source)
    if found != published.blob:
      raise ConfigError(
        f'{source} is not {published.page}: its git blob id is {found}, not {published.blob}'
        f' (a different or damaged file; nothing was kept)'
      )
    try:
      state_dict = porting.read_torch_checkpoint(source)
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
      raise ConfigError(f'{source}: {e}') from None
  log(f'{name}: {directory} ({published.licence} licence, {published.page})')
  return directory
