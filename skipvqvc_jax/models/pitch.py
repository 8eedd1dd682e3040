"""`vqvc+_pitch` (the original's `model/vqvc+_pitch`, trained by `train_pitch_multi.py`): the only model
of the original conditioned on F0.

The multi-scale encoder (time norm, unit frames, plain codebooks of n_embed/4, n_embed/2, n_embed codes,
finest scale first) and decoder input (content + speaker) of `vqvc+_multi`, with VQVC+'s recurrent
decoder blocks; each decoder stage also adds recurrent blocks of the source's F0 contour at its frame
rate to both its outputs. The contour is the trainer's model-space one (`f0.model_contour`): log-F0
in semitones less its voiced mean, so the level of the voice comes from the speaker terms and the
contour (the melody) from the source.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from skipvqvc_jax.models.layers import NUM_SCALES
from skipvqvc_jax.models.multi import MultiDecoder, VQVCPlusMulti


class VQVCPlusPitch(VQVCPlusMulti):
  """`vqvc+_pitch`: decode/reconstruct/convert take the source's F0 contour f0 (B, T)."""

  name = 'vqvc+_pitch'
  takes_f0 = True
  max_norm = False
  codebook_divisors = (4, 2, 1)
  decoder_body = 'rc'

  def _make_decoder(self, rngs: nnx.Rngs) -> nnx.Module:
    return MultiDecoder(
      self.in_channel,
      self.channel,
      body='rc',
      gru_init=self.gru_init,
      refine_residual=True,
      inputs=NUM_SCALES,
      rngs=rngs,
      pitch=True,
    )

  def _decoder_outputs(self, inputs: list, key, f0=None) -> list:
    # The trainer's F.interpolate(scale_factor=1/2, 'nearest') twice: every 2nd, every 4th frame.
    contour = jnp.asarray(f0, inputs[0].dtype)[..., None]  # (B, T, 1)
    stages = [contour[:, :: 2 ** (NUM_SCALES - 1 - j)] for j in range(NUM_SCALES)]
    return self.dec(inputs, key, stages)
