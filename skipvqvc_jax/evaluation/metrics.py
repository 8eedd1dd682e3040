"""The figures evaluation reports, as pure functions of arrays: cepstral distortions (the log-mel one,
and the standard WORLD/SPTK mel-cepstral distortion with the eval extra), F0 agreement, word and
character error rates, and the equal error rate and identification rate of speaker scores."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence

import numpy as np

MCD_COEFFS = 24  # mel-cepstral coefficients c1..c24 (c0, the energy, is left out as usual)


def mel_cepstrum(log10_mel: np.ndarray, coeffs: int = MCD_COEFFS) -> np.ndarray:
  """(frames, coeffs) mel-cepstra c1..c_coeffs of a log10 mel-amplitude spectrogram.

  c_d = (2 / N) sum_k ln S_k cos(pi d (k + 1/2) / N) over the N mel bands: the cosine series with
  ln S(w) ~ c_0 + 2 sum_d c_d cos(d w) on the mel-warped axis, the scale of SPTK mel-cepstra that the
  MCD formula assumes (an orthonormal DCT would inflate it by sqrt(N / 2)).
  """
  import scipy.fft  # pylint: disable=import-outside-toplevel

  log_mel = np.log(10.0) * np.asarray(log10_mel, np.float64)
  cep = scipy.fft.dct(log_mel, type=2, norm=None, axis=0) / log_mel.shape[0]  # (2/N) sum cos
  return cep[1 : coeffs + 1].T


def cepstral_distortion_dtw(a: np.ndarray, b: np.ndarray) -> float:
  """(10 / ln 10) sqrt(2 sum_d (a_d - b_d)^2) in dB, averaged over the DTW alignment of two
  (frames, coefficients) cepstra."""
  import librosa  # pylint: disable=import-outside-toplevel
  import scipy.spatial  # pylint: disable=import-outside-toplevel

  cost = scipy.spatial.distance.cdist(a, b)  # (Ta, Tb), never a (Ta, Tb, coefficients) tensor
  _, path = librosa.sequence.dtw(C=cost)
  diff = a[path[:, 0]] - b[path[:, 1]]
  return float(np.mean(10.0 / np.log(10.0) * np.sqrt(2.0 * (diff**2).sum(-1))))


def lmcd_dtw(log10_mel: np.ndarray, reference: np.ndarray) -> float:
  """Log-mel cepstral distortion (dB) between two log-mels: the MCD formula on the cepstrum of the
  80-band log-mel (`mel_cepstrum`), not on a WORLD/SPTK mel-cepstrum; its values are not comparable
  with the MCD of papers (`world_mcd_dtw` is)."""
  return cepstral_distortion_dtw(mel_cepstrum(log10_mel), mel_cepstrum(reference))


def world_mel_cepstrum(wave: np.ndarray, sample_rate: int, order: int = MCD_COEFFS) -> np.ndarray:
  """(frames, order) mel-cepstra c1..c_order of a waveform: WORLD analysis (DIO + StoneMask F0,
  CheapTrick envelope, 5 ms frames), then SPTK's sp2mc with the all-pass constant that best warps
  this sample rate onto the mel scale (pysptk's mcepalpha: 0.455 at 22050 Hz, 0.41 at 16 kHz)."""
  import pysptk  # pylint: disable=import-outside-toplevel  (the eval extra)
  import pyworld  # pylint: disable=import-outside-toplevel

  x = np.asarray(wave, np.float64)
  f0, times = pyworld.dio(x, sample_rate, frame_period=5.0)
  f0 = pyworld.stonemask(x, f0, times, sample_rate)
  envelope = pyworld.cheaptrick(x, f0, times, sample_rate)
  alpha = pysptk.util.mcepalpha(sample_rate)
  return pysptk.sp2mc(envelope, order=order, alpha=alpha)[:, 1:]


def world_mcd_dtw(wave: np.ndarray, reference: np.ndarray, sample_rate: int) -> float:
  """The mel-cepstral distortion of voice-conversion papers (dB): MCD = (10 / ln 10)
  sqrt(2 sum_{d=1}^{24} (c_d - c'_d)^2) over WORLD/SPTK mel-cepstra, averaged along the frame-wise DTW
  alignment of the two waveforms."""
  return cepstral_distortion_dtw(
    world_mel_cepstrum(wave, sample_rate), world_mel_cepstrum(reference, sample_rate)
  )


def world_available() -> bool:
  """pyworld and pysptk installed and importable (both import pkg_resources, from setuptools < 81)."""
  if not all(importlib.util.find_spec(name) for name in ('pysptk', 'pyworld')):
    return False
  try:
    import pysptk  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    import pyworld  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return True


def f0_contour(wave: np.ndarray, sample_rate: int, frame_ms: float = 5.0) -> np.ndarray:
  """F0 in Hz every `frame_ms` (0 where unvoiced): WORLD's DIO, refined by StoneMask (eval extra)."""
  import pyworld  # pylint: disable=import-outside-toplevel

  x = np.asarray(wave, np.float64)
  f0, times = pyworld.dio(x, sample_rate, frame_period=frame_ms)
  return pyworld.stonemask(x, f0, times, sample_rate)


def f0_agreement(reference: np.ndarray, f0: np.ndarray) -> dict:
  """How closely `f0` follows `reference` (two F0 contours of one timing, in Hz, 0 unvoiced) on the
  frames voiced in both: the Pearson correlation of log-F0, and the RMSE of log-F0 in cents (100 per
  semitone). A conversion keeps the source's timing, so its frames align with the source's."""
  n = min(len(reference), len(f0))
  reference, f0 = np.asarray(reference[:n], np.float64), np.asarray(f0[:n], np.float64)
  voiced = (reference > 0) & (f0 > 0)
  if voiced.sum() < 3:
    return dict(voiced_frames=int(voiced.sum()), f0_corr=None, f0_rmse_cents=None)
  a, b = np.log2(reference[voiced]), np.log2(f0[voiced])
  corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
  return dict(
    voiced_frames=int(voiced.sum()),
    f0_corr=corr,
    f0_rmse_cents=float(1200.0 * np.sqrt(np.mean((a - b) ** 2))),
  )


def words(text: str) -> list[str]:
  """The words of a transcript or a recogniser's output: lower case, letters, digits, apostrophes."""
  return re.findall(r"[a-z0-9']+", text.lower())


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
  """Levenshtein distance: the substitutions, deletions and insertions that make one the other."""
  previous = list(range(len(hypothesis) + 1))
  for i, r in enumerate(reference, 1):
    current = [i]
    for j, h in enumerate(hypothesis, 1):
      current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
    previous = current
  return previous[-1]


def error_rates(reference: str, hypothesis: str) -> tuple[float, float]:
  """(word error rate, character error rate) of a recogniser's `hypothesis` for what was said; the
  characters are those of the words joined by single spaces. 1.0 when nothing was recognised."""
  ref_words, hyp_words = words(reference), words(hypothesis)
  if not ref_words:
    raise ValueError(f'no words in the reference transcript {reference!r}')
  ref_chars, hyp_chars = ' '.join(ref_words), ' '.join(hyp_words)
  return (
    edit_distance(ref_words, hyp_words) / len(ref_words),
    edit_distance(ref_chars, hyp_chars) / len(ref_chars),
  )


def identification(scores: np.ndarray, truth: np.ndarray) -> float:
  """Top-1 identification rate: the share of rows whose highest score is in the column `truth` names
  (scores: (trials, speakers))."""
  return float(np.mean(np.argmax(scores, axis=1) == truth))


def equal_error_threshold(same: Sequence[float], different: Sequence[float]) -> tuple[float, float]:
  """(threshold, equal error rate): where rejecting same-speaker and accepting other-speaker scores
  are equally likely. Every distinct score is a candidate threshold; the error rates at all of them
  come from the sorted scores (O(n log n): millions of pairs take a second)."""
  same, different = np.sort(np.asarray(same)), np.sort(np.asarray(different))
  candidates = np.unique(np.concatenate([same, different]))
  false_reject = np.searchsorted(same, candidates, side='left') / len(same)
  false_accept = 1.0 - np.searchsorted(different, candidates, side='left') / len(different)
  i = int(np.argmin(np.abs(false_reject - false_accept)))
  return float(candidates[i]), float((false_reject[i] + false_accept[i]) / 2)
