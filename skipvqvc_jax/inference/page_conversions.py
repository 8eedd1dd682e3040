"""The web page's conversions (`skipvqvc-demo`): one restored model serving many requests, each
checked (length read from its header, a missing upload named), converted, written into a folder of its
own with an image of its mels, of which only the newest are kept.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from skipvqvc_jax.core import errors
from skipvqvc_jax.data import audio
from skipvqvc_jax.inference import convert


def max_upload_bytes(max_seconds: float) -> int:
  """The largest upload the page takes: `max_seconds` of 48 kHz stereo 32-bit WAV (the heaviest
  audio a browser records or a user is likely to have), and a MiB of headers."""
  return int(max_seconds * 48_000 * 2 * 4) + (1 << 20)


class PageConversions:
  """The page's one action: files in, (converted audio, mel images) out; user errors as messages.
  Its results go to `out_dir`, of which the last `keep_results` conversions are kept."""

  def __init__(self, model: str, vocoders: list[str], max_seconds: float, keep_results: int = 20):
    self.converter = convert.Converter.restore(model)  # Griffin-Lim: no download at start
    self.model, self.vocoders, self.max_seconds = model, vocoders, max_seconds
    self.keep_results = keep_results
    self._by_vocoder = {'griffin_lim': self.converter}
    self.out_dir = tempfile.mkdtemp(prefix='skipvqvc-demo-')

  def converter_for(self, vocoder: str) -> convert.Converter:
    if vocoder not in self.vocoders:
      raise errors.ConversionError(f'unknown vocoder {vocoder!r}: choose one of {self.vocoders}')
    if vocoder not in self._by_vocoder:
      c = self.converter
      c = convert.Converter(c.model, c.settings, c.trainer, vocoder, config=c.config)
      self._by_vocoder[vocoder] = c
    return self._by_vocoder[vocoder]

  def _mel(self, path: str | None, what: str) -> np.ndarray:
    if not path:
      raise errors.ConversionError(f'{what}: upload or record one')
    name = os.path.basename(path)
    seconds = audio.duration(path)  # a header read: a long file is refused unread
    if seconds is not None and seconds > self.max_seconds:
      raise errors.ConversionError(
        f'{what} {name} is {seconds:.0f} s long; this page converts up to {self.max_seconds:.0f} s '
        f'(skipvqvc-convert takes any length)'
      )
    try:
      mel = self.converter.features(path)
    except errors.ConversionError as e:
      raise errors.ConversionError(f'{what}: {str(e).replace(path, name)}') from None
    frames_per_second = self.converter.params.sample_rate / self.converter.params.hop_length
    if mel.shape[1] / frames_per_second > self.max_seconds:
      raise errors.ConversionError(
        f'{what} {name} is longer than {self.max_seconds:.0f} s (skipvqvc-convert takes any length)'
      )
    return mel

  def run(
    self,
    source: str | None,
    reference: str | None,
    more: list | None,
    vocoder: str,
    f0_shift: float = 0.0,
  ):
    """(wav path, mel image path) of one conversion (an F0 model's melody shifted by f0_shift
    semitones); ConversionError for what the user can fix."""
    converter = self.converter_for(vocoder)
    source_mel = self._mel(source, 'the source')
    references = [reference] + [getattr(f, 'name', f) for f in more or []]
    references = [r for r in references if r]
    if not references and not converter.model.speaker_free:
      raise errors.ConversionError('the target voice: upload or record at least one reference')
    reference_mels = [self._mel(r, 'a reference') for r in references]
    # A speaker-free (any-to-one) model speaks in its training voice: references change nothing.
    speaker = converter.speaker(reference_mels) if reference_mels else converter.no_speaker()
    mel = converter.convert_mel(source_mel, speaker, converter.source_f0(source), f0_shift)
    fd, wav = tempfile.mkstemp(suffix='.wav', prefix='converted-', dir=self.out_dir)
    os.close(fd)
    audio.write_audio(wav, converter.vocoder(mel), converter.sample_rate)
    image = os.path.join(os.path.dirname(wav), os.path.basename(wav)[:-4] + '.png')
    titles = ['source', 'reference', 'converted'] if reference_mels else ['source', 'converted']
    _plot([source_mel, *reference_mels[:1], mel], titles, image)
    self._prune()
    return wav, image

  def _prune(self) -> None:
    """Keeps the newest `keep_results` conversions (a wav and a png each) in out_dir."""
    made = sorted(
      (os.path.join(self.out_dir, f) for f in os.listdir(self.out_dir) if f.endswith('.wav')),
      key=os.path.getmtime,
    )
    for wav in made[: -self.keep_results]:
      for path in (wav, wav[:-4] + '.png'):
        if os.path.exists(path):
          os.remove(path)


def _plot(mels, titles, path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, axes = plt.subplots(1, len(mels), figsize=(4 * len(mels), 2.6))
  for ax, mel, title in zip(axes, mels, titles):
    ax.imshow(mel, aspect='auto', origin='lower', interpolation='none', cmap='magma')
    ax.set_title(title)
    ax.set_xlabel('frames')
  axes[0].set_ylabel('mel band')
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
