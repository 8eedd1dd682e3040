"""Griffin-Lim in JAX: log-mel -> linear magnitude (non-negative pseudo-inverse) -> phase by iteration.

Analysis and synthesis are the features' own (`audio.stft` / `audio.istft`), so a mel of T frames gives
T * hop samples. The phase iteration is the "fast" Griffin-Lim with momentum (Perraudin et al. 2013), as
librosa's.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from skipvqvc_jax.data import audio
from skipvqvc_jax.vocoders.windows import vocode_in_windows


def mel_inverse(params: audio.FeatureParams) -> np.ndarray:
  """(n_fft // 2 + 1, n_mels) pseudo-inverse of the mel filterbank."""
  return np.linalg.pinv(audio.mel_basis(params)).astype(np.float32)


@functools.partial(jax.jit, static_argnames=('params', 'n_iter', 'momentum'))
def _griffin_lim(log_mel, key, params: audio.FeatureParams, n_iter: int, momentum: float):
  magnitude = jnp.maximum(jnp.einsum('fm,bmt->btf', mel_inverse(params), 10.0**log_mel), 0.0)
  angles = jnp.exp(2j * jnp.pi * jax.random.uniform(key, magnitude.shape))

  def body(_, carry):
    angles, previous = carry
    rebuilt = audio.stft(audio.istft(magnitude * angles, params), params)
    angles = rebuilt - (momentum / (1 + momentum)) * previous
    return angles / (jnp.abs(angles) + 1e-16), rebuilt

  angles, _ = jax.lax.fori_loop(0, n_iter, body, (angles, jnp.zeros_like(angles)))
  return audio.istft(magnitude * angles, params)


class GriffinLim:
  """A vocoder: raw log10 mels (n_mels, T) or (B, n_mels, T) -> float32 waveforms of T * hop samples."""

  name = 'griffin_lim'

  def __init__(
    self,
    params: audio.FeatureParams = audio.FeatureParams(),
    n_iter: int = 32,
    momentum: float = 0.99,
    seed: int = 0,
  ):
    self.params, self.n_iter, self.momentum, self.seed = params, n_iter, momentum, seed
    self.sample_rate = params.sample_rate

  def __call__(self, log_mel) -> np.ndarray:
    """One mel (n_mels, T) -> T * hop samples (a long one in overlapping windows); or a batch."""
    log_mel = np.asarray(log_mel, np.float32)
    run = lambda mels: np.asarray(
      _griffin_lim(mels, jax.random.key(self.seed), self.params, self.n_iter, self.momentum),
      np.float32,
    )
    if log_mel.ndim == 2:
      return vocode_in_windows(run, log_mel, self.params.hop_length)
    return run(log_mel)
