"""What the VQVC+ models compute their terms with: the array layout, the time normalisation, the
speaker term, and the rhythm path of the rhythm variants."""

from __future__ import annotations

import jax.numpy as jnp


def to_public(x):
  """(B, T, C) <-> (B, C, T); the same swap converts both ways."""
  return jnp.swapaxes(x, 1, 2)


def l2norm(x, axis):
  return jnp.linalg.norm(x, axis=axis, keepdims=True)


def time_normalise(x):
  """(x - its mean over time) / (its L2 norm over time + 1e-4), and that norm (the original's std)."""
  centred = x - jnp.mean(x, axis=1, keepdims=True)
  std = l2norm(centred, 1) + 1e-4
  return centred / std, std


def unit_frames(x):
  return x / l2norm(x, -1)


def residual_speaker(residual):
  """The time-mean of what quantization left out, at norm 1/3: the speaker term of most variants."""
  sp = jnp.mean(residual, axis=1, keepdims=True)
  return sp / (l2norm(sp, -1) + 1e-4) / 3


def rhythm_stage_input(j: int, q, sp, std, rhythm):
  """The rhythm models' decoder input: content * std + speaker, plus rhythm at the coarsest scale."""
  z = q * std + sp
  return z + rhythm if j == 0 else z


class RhythmVariant:
  """What the two rhythm models (`vqvc+_rhythm`, `vqvc+_multi_rhythm`) add to their sibling: a second
  pass of `mel` through the encoder gives the timing (see `VQVCModel.encode`), content is centred over
  channels, and the decoder takes content * std + speaker, plus the rhythm at the coarsest scale."""

  takes_content_mel = True

  def _content_of_rows(self, rows):
    return rows - jnp.mean(rows, axis=-1, keepdims=True)

  def _stage_input(self, j, q, sp, std, rhythm):
    return rhythm_stage_input(j, q, sp, std, rhythm)
