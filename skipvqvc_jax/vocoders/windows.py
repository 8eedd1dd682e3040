"""Vocoding a long mel in overlapping windows, so memory stays that of one window.

A 10-minute source is 25,800 frames; Griffin-Lim over all of them at once held 4 GB on the 2-core
machine. In windows of `window` frames that overlap by `overlap`, each vocoded on its own and joined
with a linear crossfade over the overlap, memory is bounded by one window, and one compiled shape
serves every window (the last is padded). MelGAN's receptive field is far below the overlap, so its
windows join seamlessly; Griffin-Lim's phases are estimated per window, and the crossfade hides the
seam (benchmarks/README.md measures the difference in spectral convergence).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

WINDOW_FRAMES = 1024  # about 12 s at hop 256 and 22050 Hz
OVERLAP_FRAMES = 32  # about 0.37 s of crossfade


def vocode_in_windows(
  vocode: Callable[[np.ndarray], np.ndarray],
  mel: np.ndarray,
  hop: int,
  window: int = WINDOW_FRAMES,
  overlap: int = OVERLAP_FRAMES,
) -> np.ndarray:
  """vocode((1, n_mels, window) mels) -> (1, window * hop) waveforms, applied to (n_mels, T) in
  overlapping windows; returns T * hop samples."""
  frames = mel.shape[1]
  if frames <= window:
    return vocode(mel[None])[0]
  step = window - overlap
  fade = np.linspace(0.0, 1.0, overlap * hop, endpoint=False, dtype=np.float32)
  out = np.zeros(frames * hop, np.float32)
  for start in range(0, frames - overlap, step):
    piece = mel[:, start : start + window]
    valid = piece.shape[1]
    if valid < window:  # the last window: padded to the one compiled length, then cut back
      piece = np.pad(piece, ((0, 0), (0, window - valid)), mode='edge')
    wave = np.array(vocode(piece[None])[0], np.float32)[: valid * hop]  # a writable copy
    begin = start * hop
    if start:
      wave[: len(fade)] *= fade
      out[begin : begin + len(fade)] *= 1.0 - fade  # the weights of a sample sum to 1
    out[begin : begin + len(wave)] += wave
  return out
