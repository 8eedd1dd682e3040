"""Speech recognition for the evaluation's intelligibility figures: pocketsphinx with the US English
acoustic model, dictionary and language model that ship inside its package (the eval extra; nothing is
downloaded at run time). Its absolute error rates on clean read speech are far above a modern
recogniser's; what the evaluation reads is the gap between a conversion, a reconstruction and the
unconverted recording, all through the same recogniser and vocoder."""

from __future__ import annotations

import importlib.util

import numpy as np

SAMPLE_RATE = 16000  # the acoustic model's


def missing() -> str | None:
  """Why recognition is unavailable (what to install), or None."""
  if importlib.util.find_spec('pocketsphinx') is None:
    return 'pip install -e ".[eval]" (pocketsphinx)'
  return None


class Recogniser:
  """wave -> the words pocketsphinx hears, one utterance at a time."""

  def __init__(self):
    from pocketsphinx import Decoder  # pylint: disable=import-outside-toplevel  (the eval extra)

    self._decoder = Decoder(samprate=SAMPLE_RATE, loglevel='ERROR')

  def __call__(self, wave: np.ndarray, sample_rate: int) -> str:
    import librosa  # pylint: disable=import-outside-toplevel

    y = np.asarray(wave, np.float32)
    if sample_rate != SAMPLE_RATE:
      y = librosa.resample(y, orig_sr=sample_rate, target_sr=SAMPLE_RATE)
    pcm = (np.clip(y, -1.0, 1.0) * 32767).astype('<i2').tobytes()
    self._decoder.start_utt()
    self._decoder.process_raw(pcm, full_utt=True)
    self._decoder.end_utt()
    hypothesis = self._decoder.hyp()
    return hypothesis.hypstr if hypothesis is not None else ''
