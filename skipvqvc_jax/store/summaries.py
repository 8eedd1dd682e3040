"""TensorBoard output with tensorboardX: scalars, mel images and audio, written by process 0 only.

In a bucket (a URL workdir) the event file is written through `storage` like every other file of a
run: object storage cannot append, so each flush uploads the whole event file as one object, which
TensorBoard (reading gs:// itself) sees whole at every moment. So that a long run does not upload
the square of its events, the file is cut into parts of about `part_bytes` (`<name>.part0001`, ...,
which TensorBoard reads in order as one run): a flush uploads the current part only."""

from __future__ import annotations

import glob
import io
import os
import struct
import threading

import jax
import numpy as np
from absl import logging

from skipvqvc_jax.core import deadlines, storage


def mel_image(mel: np.ndarray, title: str = '') -> np.ndarray:
  """(n_mels, frames) log-mel -> an RGB uint8 (H, W, 3) picture, low bands at the bottom."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, ax = plt.subplots(figsize=(8, 3), dpi=80)
  im = ax.imshow(mel, aspect='auto', origin='lower', interpolation='none', cmap='magma')
  fig.colorbar(im, ax=ax)
  ax.set(xlabel='frame', ylabel='mel band', title=title)
  return figure_rgb(fig)


def figure_rgb(fig) -> np.ndarray:
  """A matplotlib figure as an RGB uint8 (H, W, 3) array; the figure is closed."""
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format='raw')
  width, height = fig.canvas.get_width_height()
  plt.close(fig)
  return np.frombuffer(buffer.getvalue(), np.uint8).reshape(height, width, 4)[..., :3].copy()


class _ObjectEventFile:
  """An event file in object storage: the records of its current part, uploaded whole at each flush,
  within `timeout` seconds (storage that stops answering ends the run with one line, not a hang).
  Once a part reaches `part_bytes` (0: never) the next records go to a new part, which starts with
  the file's first record (the event file's version) as every event file does."""

  def __init__(self, path: str, timeout: float, part_bytes: int = 0):
    self.base, self.path, self.timeout, self.part_bytes = path, path, timeout, part_bytes
    self.buffer, self.uploaded, self.parts, self.header = io.BytesIO(), 0, 0, None
    # Uploads happen in the thread that opened the file (the run's), never in tensorboardX's own
    # writer thread: a deadline missed there killed that thread, and the run's next flush then waited
    # for ever on its queue.
    self.owner = threading.get_ident()

  def write(self, piece: bytes) -> None:  # a record comes in four pieces (length, crc, data, crc)
    self.buffer.write(piece)

  def flush(self) -> None:
    if self.buffer.tell() == self.uploaded or threading.get_ident() != self.owner:
      return
    data = self.buffer.getvalue()

    def upload():
      with storage.open(self.path, 'wb') as f:
        f.write(data)

    deadlines.bounded(
      upload,
      f'the TensorBoard event file {self.path}',
      self.timeout,
      'check that the storage answers, then rerun the same command: it continues from its last '
      'complete checkpoint',
    )
    self.uploaded = len(data)
    if self.part_bytes and len(data) >= self.part_bytes:
      if self.header is None:  # the first record: its length, the length's crc, itself, its crc
        self.header = data[: 16 + struct.unpack('<Q', data[:8])[0]]
      self.parts += 1
      self.path = f'{self.base}.part{self.parts:04d}'
      self.buffer = io.BytesIO()
      self.buffer.write(self.header)
      self.uploaded = len(self.header)  # a part holding only the header is not uploaded

  def close(self) -> None:
    self.flush()


class _ObjectEventFiles:
  """tensorboardX's writer factory for one URL scheme (its own gs:// writer needs another client)."""

  def __init__(self, timeout: float, part_bytes: int):
    self.timeout, self.part_bytes = timeout, part_bytes

  def open(self, path: str) -> _ObjectEventFile:
    return _ObjectEventFile(path, self.timeout, self.part_bytes)

  def directory_check(self, path: str) -> None:
    del path  # object storage has no folders to make


class Writer:
  """A SummaryWriter in {workdir}/tensorboard on process 0; a no-op elsewhere."""

  def __init__(self, workdir: str, upload_seconds: float = 600.0, part_bytes: int = 1 << 20):
    """upload_seconds: how long an event file's upload to a bucket may take; part_bytes: the size
    at which an event file in a bucket goes on in a new part (0: one file, uploaded whole each
    flush)."""
    self._writer = None
    self._event_file = None  # on a local disk: the event file being written
    self.logdir = storage.join(workdir, 'tensorboard')
    if jax.process_index() == 0:
      from tensorboardX import record_writer  # pylint: disable=import-outside-toplevel

      if storage.is_url(workdir):
        factory = _ObjectEventFiles(upload_seconds, part_bytes)
        record_writer.register_writer_factory(workdir.split('://')[0], factory)
      self._open()

  def _open(self) -> None:
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel

    self._writer = SummaryWriter(self.logdir)
    if not storage.is_url(self.logdir):
      events = glob.glob(os.path.join(self.logdir, 'events.out.tfevents.*'))
      self._event_file = max(events, key=os.path.getmtime, default=None)

  def _reopen_if_removed(self, step: int) -> None:
    """A new event file when the one being written was deleted (tensorboard/ removed mid-run): on
    Linux the writes would go on into the deleted file, every later event lost in silence."""
    if self._event_file is None or os.path.exists(self._event_file):
      return
    logging.warning(
      '%s was removed while this run wrote it: writing a new event file from step %d (the events '
      'before it are gone with the removed file)',
      self._event_file,
      step,
    )
    self._writer.close()
    self._open()

  def scalars(self, step: int, values: dict, prefix: str = '') -> None:
    if self._writer:
      self._reopen_if_removed(step)
      for name, value in values.items():
        self._writer.add_scalar(prefix + name, float(value), step)

  def mel(self, step: int, tag: str, mel: np.ndarray) -> None:
    if self._writer:
      self._writer.add_image(tag, mel_image(np.asarray(mel), tag), step, dataformats='HWC')

  def audio(self, step: int, tag: str, wave: np.ndarray, sample_rate: int) -> None:
    if self._writer:
      wave = np.clip(np.asarray(wave, np.float32), -1.0, 1.0)
      self._writer.add_audio(tag, wave, step, sample_rate=sample_rate)

  def hparams(self, config: dict, metrics: list[str]) -> None:
    """The run's settings for TensorBoard's HParams tab (flattened, `model.channel`), linked to the
    scalars `metrics` (e.g. test/loss) that the run writes, so that runs compare side by side."""
    if self._writer:
      from tensorboardX.summary import hparams  # pylint: disable=import-outside-toplevel

      flat = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in _flat(config)}
      # pylint: disable-next=protected-access
      events = self._writer._get_file_writer()
      for summary in hparams(flat, {name: 0.0 for name in metrics}):
        events.add_summary(summary)

  def text(self, step: int, tag: str, text: str) -> None:
    if self._writer:
      self._writer.add_text(tag, text, step)

  def flush(self) -> None:
    if self._writer:
      self._writer.flush()

  def close(self) -> None:
    if self._writer:
      self._writer.close()


def _flat(tree: dict, prefix: str = ''):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _flat(value, f'{prefix}{key}.')
    else:
      yield prefix + key, value


class Profile:
  """A jax.profiler trace of `steps` training steps into {workdir}/tensorboard (TensorBoard's Profile
  tab), from the run's second step: its first compiles."""

  def __init__(self, steps: int, workdir: str, first_step: int):
    self.start = first_step + 1 if steps else None
    self.stop = self.start + steps if steps else None
    self.logdir = storage.join(workdir, 'tensorboard')
    self.tracing = False

  def before(self, step: int) -> None:
    # From the first call at or after `start` (a call may run several steps).
    if self.start is not None and not self.tracing and self.start <= step < self.stop:
      jax.profiler.start_trace(self.logdir)
      self.tracing, self.start = True, step

  def after(self, step: int, state) -> None:
    if self.tracing and step >= self.stop:
      self.stop = step
      self._end(state)
      self.start = None

  def _end(self, state=None) -> None:
    jax.block_until_ready(state)  # the traced steps' device work inside the trace
    jax.profiler.stop_trace()
    self.tracing = False
    logging.info('wrote a profile of steps %d-%d to %s', self.start + 1, self.stop, self.logdir)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    if self.tracing:  # the run stopped inside the traced steps
      self._end()
