"""The original's speaker-free models of its LJSpeech notebook (`model/vqvc+_multi_codebook_lj`,
`model/vqvc+_lj3`): multi-scale VQ autoencoders with no speaker terms, trained on one speaker, so that
they say any source's content in that speaker's voice (any-to-one conversion: the target is ignored).

Both quantize unit-norm frames against codebooks of n_embed codes at every scale, and each encoder
stage reads the previous stage's normalised frames (not its raw output, as the other models do); the
decoder has VQVC+'s recurrent blocks and takes the content alone. `vqvc+_lj3` adds a 2-group GroupNorm
before the unit norm, max_norm codebooks, and decodes from its coarsest scale only.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from skipvqvc_jax.models.layers import group_norm, torch_norm
from skipvqvc_jax.models.multi import VQVCPlusMulti
from skipvqvc_jax.models.terms import unit_frames


class VQVCPlusMultiCodebookLJ(VQVCPlusMulti):
  """`vqvc+_multi_codebook_lj`: `encode` gives zero speaker terms and unit stds (there are none);
  its `speaker_blocks` are built by the original but never used, and dropped here."""

  name = 'vqvc+_multi_codebook_lj'
  speaker_free = True
  chains_quantizer_input = True
  codebook_divisors = (1, 1, 1)
  max_norm = False
  decoder_body = 'rc'
  torch_unused = (r'speaker_blocks\.',)

  def _normalise(self, s: int, x):
    return unit_frames(x), jnp.ones_like(x[:, :1])

  def _encode_scale(self, s: int, x, noise) -> dict:
    xn, std = self._normalise(s, x)
    quantized = self.quantize[s](xn)
    extras = {} if quantized.table is None else dict(renormed_codebooks=quantized.table)
    return dict(
      content=quantized.value,
      speaker=jnp.zeros_like(std),
      std=std,
      codes=quantized.codes,
      quantizer_in=xn,
      loss=quantized.loss,
      extras=extras,
    )

  def _stage_input(self, j, q, sp, std, rhythm):
    return q


class VQVCPlusLJ3(VQVCPlusMultiCodebookLJ):
  """`vqvc+_lj3`: GroupNorm(2 groups, `gnorm.{s}`) then the unit norm; max_norm codebooks; only the
  coarsest scale is decoded (its finer quantizers still train through the latent loss)."""

  name = 'vqvc+_lj3'
  max_norm = True
  decoder_inputs = 1
  torch_unused = (r'dec\.block0\.', r'dec\.resblock\.[12]\.')

  def _init_variant(self, widths, rngs: nnx.Rngs):
    self.gnorm = nnx.List([group_norm(w, rngs, groups=2) for w in widths])

  def _normalise(self, s: int, x):
    return unit_frames(self.gnorm[s](x)), jnp.ones_like(x[:, :1])

  def _torch_variant(self, table):
    for s, norm in enumerate(self.gnorm):
      torch_norm(table, f'gnorm.{s}', norm)
