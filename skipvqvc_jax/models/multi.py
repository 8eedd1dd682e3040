"""The original's multi-scale VQVC+ family (`model/vqvc+_multi*`): the decoder answers at every scale.

The encoder is VQVC+'s. The decoder returns the output of each of its three stages, coarsest first as the
original does: (B, in/4, T/4), (B, in/2, T/2) and the full mel (B, in, T); the multi trainers score each
against the low bands of the input at that frame rate. So `decode`, `reconstruct`, `convert` and
`decode_codes` return a list of three mels, the last the full mel (as every model's list ends).

This module has the base (`vqvc+_multi`) and the variants that change only its blocks: `vqvc+_multi_simple`
(plain decoder blocks), `vqvc+_multi_rhythm` (recurrent blocks and a rhythm path) and `vqvc+_multi_ps`
(GroupNorm instead of the time norm, one decoder input). The speaker-network variants are in
`multi_speaker.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from skipvqvc_jax.models.base import VQVCModel
from skipvqvc_jax.models.layers import (
  NUM_SCALES,
  Conv1d,
  GBlock,
  GruInit,
  group_norm,
  leaky_relu,
  torch_conv,
  torch_gblock,
  torch_norm,
)
from skipvqvc_jax.models.terms import RhythmVariant, residual_speaker, time_normalise, unit_frames


class ConvBlock(nnx.Module):
  """The multi-scale GBlock without recurrence: conv(C -> M) [-> GroupNorm(4)] -> leaky -> conv(M -> C)."""

  def __init__(self, channels: int, middle: int, *, norm: bool, rngs: nnx.Rngs):
    self.conv_in = Conv1d(channels, middle, 3, padding=1, rngs=rngs)
    self.norm_in = group_norm(middle, rngs) if norm else None
    self.conv_out = Conv1d(middle, channels, 3, padding=1, rngs=rngs)

  def __call__(self, x, noise_key=None):
    h = self.conv_in(x)
    if self.norm_in is not None:
      h = self.norm_in(h)
    return self.conv_out(leaky_relu(h))

  def torch_names(self, table: dict, prefix: str) -> None:
    torch_conv(table, f'{prefix}.block.0', self.conv_in)
    if self.norm_in is None:
      torch_conv(table, f'{prefix}.block.2', self.conv_out)
    else:
      torch_norm(table, f'{prefix}.block.1', self.norm_in)
      torch_conv(table, f'{prefix}.block.3', self.conv_out)


class MultiDecoder(nnx.Module):
  """Coarse to fine: add the stage's input, upsample x2, add blocks(x), concatenate a refined copy.

  body: 'gn' (conv-GroupNorm-conv), 'plain' (conv-conv) or 'rc' (VQVC+'s recurrent GBlock). With
  refine_residual the refined copy is x + refine(x), else refine(x). Only the first `inputs` stages
  take an input (`vqvc+_multi_ps` decodes from its coarsest scale alone). With `pitch`
  (`vqvc+_pitch`), each stage adds recurrent blocks of the F0 contour at its frame rate (one channel
  in) to both its blocks' outputs.
  """

  def __init__(
    self,
    in_channel: int,
    middle: int,
    *,
    body: str,
    gru_init: GruInit,
    refine_residual: bool,
    inputs: int,
    rngs: nnx.Rngs,
    pitch: bool = False,
  ):
    channels = [in_channel // 2 ** (NUM_SCALES - j) for j in range(NUM_SCALES)]  # 10, 20, 40

    def block(c):
      if body == 'rc':
        return GBlock(c, middle, gru_init=gru_init, rngs=rngs)
      return ConvBlock(c, middle, norm=body == 'gn', rngs=rngs)

    self.resblock = nnx.List([block(c) for c in channels[:inputs]])
    self.blocks = nnx.List([block(c) for c in channels])
    self.blocks_refine = nnx.List([block(c) for c in channels])
    self.refine_residual = refine_residual
    self.groups = ('resblock', 'blocks', 'blocks_refine')
    if pitch:
      one_in = lambda c: GBlock(1, middle, gru_init=gru_init, rngs=rngs, out_channels=c)
      self.pitchblock = nnx.List([one_in(c) for c in channels])
      self.pitchblock_refine = nnx.List([one_in(c) for c in channels])
      self.groups += ('pitchblock', 'pitchblock_refine')

  def __call__(self, stage_inputs: Sequence[jax.Array], noise_key=None, pitch=None) -> list:
    """stage_inputs: coarse to fine, channel-last; pitch: with pitch blocks, the F0 contour
    (B, T_j, 1) of each stage's output, coarse to fine. Returns each stage's output, coarse to fine."""
    n = len(self.groups)
    keys = (
      jax.random.split(noise_key, n * NUM_SCALES).reshape(NUM_SCALES, n)
      if noise_key is not None
      else [[None] * n] * NUM_SCALES
    )
    x, outputs = 0.0, []
    for j in range(NUM_SCALES):
      if j < len(self.resblock):
        x = x + self.resblock[j](stage_inputs[j], keys[j][0])
      x = jnp.repeat(x, 2, axis=1)  # nearest-neighbour upsampling in time
      x = x + self.blocks[j](x, keys[j][1])
      if pitch is not None:
        x = x + self.pitchblock[j](pitch[j], keys[j][3])
      refined = self.blocks_refine[j](x, keys[j][2])
      if pitch is not None:
        refined = refined + self.pitchblock_refine[j](pitch[j], keys[j][4])
      x = jnp.concatenate([x, x + refined if self.refine_residual else refined], axis=-1)
      outputs.append(x)
    return outputs

  def torch_names(self, table: dict) -> None:
    for group in self.groups:
      for j, block in enumerate(getattr(self, group)):
        if isinstance(block, GBlock):
          torch_gblock(table, f'dec.{group}.{j}', block)
        else:
          block.torch_names(table, f'dec.{group}.{j}')


class VQVCPlusMulti(VQVCModel):
  """`vqvc+_multi`: VQVC+'s encoder, max_norm codebooks of n_embed, n_embed/2, n_embed/4 codes (the
  finest scale has the most), decoder input q + speaker, conv-GroupNorm-conv decoder blocks.

  The multi-scale sibling of the base: the decoder answers at each of its three stages. `encode`
  returns the same `Encoding` as VQVC+ (std is returned but not decoded, as in the original), and with
  max_norm its `extras['renormed_codebooks']` are the codebooks after the lookup's renormalisation (see
  `Quantizer`).
  """

  name = 'vqvc+_multi'
  multi_scale = True
  codebook_divisors = (1, 2, 4)
  max_norm = True
  decoder_body = 'gn'
  refine_residual = True
  decoder_inputs = NUM_SCALES

  def _make_decoder(self, rngs: nnx.Rngs) -> nnx.Module:
    return MultiDecoder(
      self.in_channel,
      self.channel,
      body=self.decoder_body,
      gru_init=self.gru_init,
      refine_residual=self.refine_residual,
      inputs=self.decoder_inputs,
      rngs=rngs,
    )

  @property
  def _decoder_draws_noise(self) -> bool:
    return self.decoder_body == 'rc' and self.gru_init == 'normal'

  def _normalise(self, s: int, x):
    """The quantizer's input at scale s (channel-last) and the std term."""
    xn, std = time_normalise(x)
    return unit_frames(xn), std

  def _encode_scale(self, s: int, x, noise) -> dict:
    xn, std = self._normalise(s, x)
    quantized = self.quantize[s](xn)
    extras = {} if quantized.table is None else dict(renormed_codebooks=quantized.table)
    return dict(
      content=self._content_of_rows(quantized.value),
      speaker=residual_speaker(x - quantized.value),
      std=std,
      codes=quantized.codes,
      quantizer_in=self.quantize[s].code_space(xn),
      loss=quantized.loss,
      extras=extras,
    )


class VQVCPlusMultiSimple(VQVCPlusMulti):
  """`vqvc+_multi_simple` (the conversion notebook's model): `vqvc+_multi` with plain conv-conv
  decoder blocks and no unused `dec.block0`."""

  name = 'vqvc+_multi_simple'
  decoder_body = 'plain'
  torch_unused = ()


class VQVCPlusMultiRhythm(RhythmVariant, VQVCPlusMulti):
  """`vqvc+_multi_rhythm`: recurrent decoder blocks, codebooks without max_norm of n_embed/4,
  n_embed/2, n_embed codes, and the rhythm path of `vqvc+_rhythm`.

  `encode(mel, content_mel)`: timing from `mel` (the channel-mean of each encoder stage), content and
  speaker from `content_mel` (default `mel`). Content is centred over channels after the speaker term
  is taken; the decoder input is content * std + speaker, plus the rhythm at the coarsest scale; the
  refined copy is concatenated without the residual. extras: `rhythm_encoder_out`.
  """

  name = 'vqvc+_multi_rhythm'
  decoder_body = 'rc'
  max_norm = False
  refine_residual = False
  codebook_divisors = (4, 2, 1)


class VQVCPlusMultiPS(VQVCPlusMulti):
  """`vqvc+_multi_ps`: a GroupNorm (2 groups, `gnorm.{s}`) replaces the time norm, all codebooks have
  n_embed codes, and only the coarsest scale is decoded (the finer scales' quantizers still train
  through the latent loss). There is no std: `Encoding.std` holds ones, which decoding ignores.
  extras: `group_norm_out` (B, T_s, C_s)."""

  name = 'vqvc+_multi_ps'
  decoder_inputs = 1
  torch_unused = (r'dec\.block0\.', r'dec\.resblock\.[12]\.')

  codebook_divisors = (1, 1, 1)

  def _init_variant(self, widths, rngs):
    self.gnorm = nnx.List([group_norm(w, rngs, groups=2) for w in widths])

  def _normalise(self, s, x):
    return unit_frames(self.gnorm[s](x)), jnp.ones_like(x[:, :1])

  def _encode_scale(self, s, x, noise):
    piece = super()._encode_scale(s, x, noise)
    piece['extras']['group_norm_out'] = self.gnorm[s](x)
    return piece

  def _torch_variant(self, table):
    for s, norm in enumerate(self.gnorm):
      torch_norm(table, f'gnorm.{s}', norm)
