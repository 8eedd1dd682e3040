"""The original's multi-scale VQVC+ family (`model/vqvc+_multi*`): the decoder answers at every scale.

The encoder is VQVC+'s. The decoder returns the output of each of its three stages, coarsest first as the
original does: (B, in/4, T/4), (B, in/2, T/2) and the full mel (B, in, T); the multi trainers score each
against the low bands of the input at that frame rate. So `decode`, `reconstruct`, `convert` and
`decode_codes` return a list of three mels, and `models.final_mel` picks the last one wherever a single
mel is wanted (conversion, evaluation, audio).

This module has the base (`vqvc+_multi`) and the variants that change only its blocks: `vqvc+_multi_simple`
(plain decoder blocks), `vqvc+_multi_rhythm` (recurrent blocks and a rhythm path) and `vqvc+_multi_ps`
(GroupNorm instead of the time norm, one decoder input). The speaker-network variants are in
`multi_speaker.py`.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from skipvqvc_jax.models.layers import (NUM_SCALES, Conv1d, EncoderStage, GBlock, GruInit,
                                        group_norm, leaky_relu, torch_conv, torch_gblock, torch_norm)
from skipvqvc_jax.models.quantizer import Quantizer
from skipvqvc_jax.models.encoding import (Encoding, l2norm, match_batch, to_public,
                                          check_rhythm_inputs, check_sizes, rhythm_path,
                                          rhythm_stage_input)
from skipvqvc_jax.models.vqvc import VQVCPlus


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
  take an input (`vqvc+_multi_ps` decodes from its coarsest scale alone).
  """

  def __init__(self, in_channel: int, middle: int, *, body: str, gru_init: GruInit,
               refine_residual: bool, inputs: int, rngs: nnx.Rngs):
    channels = [in_channel // 2 ** (NUM_SCALES - j) for j in range(NUM_SCALES)]  # 10, 20, 40

    def block(c):
      if body == 'rc':
        return GBlock(c, middle, gru_init=gru_init, rngs=rngs)
      return ConvBlock(c, middle, norm=body == 'gn', rngs=rngs)

    self.resblock = nnx.List([block(c) for c in channels[:inputs]])
    self.blocks = nnx.List([block(c) for c in channels])
    self.blocks_refine = nnx.List([block(c) for c in channels])
    self.refine_residual = refine_residual

  def __call__(self, stage_inputs: Sequence[jax.Array], noise_key=None) -> list:
    """stage_inputs: coarse to fine, channel-last. Returns each stage's output, coarse to fine."""
    keys = (jax.random.split(noise_key, 3 * NUM_SCALES).reshape(NUM_SCALES, 3)
            if noise_key is not None else [[None] * 3] * NUM_SCALES)
    x, outputs = 0.0, []
    for j in range(NUM_SCALES):
      if j < len(self.resblock):
        x = x + self.resblock[j](stage_inputs[j], keys[j][0])
      x = jnp.repeat(x, 2, axis=1)  # nearest-neighbour upsampling in time
      x = x + self.blocks[j](x, keys[j][1])
      refined = self.blocks_refine[j](x, keys[j][2])
      x = jnp.concatenate([x, x + refined if self.refine_residual else refined], axis=-1)
      outputs.append(x)
    return outputs

  def torch_names(self, table: dict) -> None:
    for group in ('resblock', 'blocks', 'blocks_refine'):
      for j, block in enumerate(getattr(self, group)):
        if isinstance(block, GBlock):
          torch_gblock(table, f'dec.{group}.{j}', block)
        else:
          block.torch_names(table, f'dec.{group}.{j}')


def time_normalise(x):
  """(x - its mean over time) / (its L2 norm over time + 1e-4), and that norm (the original's std)."""
  centred = x - jnp.mean(x, axis=1, keepdims=True)
  std = l2norm(centred, 1) + 1e-4
  return centred / std, std


def unit_frames(x):
  return x / l2norm(x, -1)


def residual_speaker(x, q):
  """The time-mean of what quantization left out, at norm 1/3."""
  sp = jnp.mean(x - q, axis=1, keepdims=True)
  return sp / (l2norm(sp, -1) + 1e-4) / 3


class VQVCPlusMulti(VQVCPlus):
  """`vqvc+_multi`: VQVC+'s encoder, max_norm codebooks of n_embed, n_embed/2, n_embed/4 codes (the
  finest scale has the most), decoder input q + speaker, conv-GroupNorm-conv decoder blocks.

  It shares VQVC+'s constructor arguments, spec, frame checks and porting names; `encode` returns the
  same `Encoding` (std is returned but not decoded, as in the original), and with max_norm its
  `extras['renormed_codebooks']` are the codebooks after the lookup's renormalisation (see `Quantizer`).
  """

  name = 'vqvc+_multi'
  multi_scale = True
  decoder_body = 'gn'
  max_norm = True
  refine_residual = True
  decoder_inputs = NUM_SCALES
  codebook_torch_name = 'embedding.weight'  # an nn.Embedding; 'embedding' for a raw nn.Parameter

  def __init__(self, in_channel: int = 80, channel: int = 512, n_embed: int = 128, *,
               gru_init: GruInit = 'normal', seed: int = 0):
    # Not VQVCPlus.__init__: the quantizers and decoder differ; the conventions are the same.
    check_sizes(in_channel, gru_init)
    self.in_channel, self.channel, self.n_embed, self.gru_init = in_channel, channel, n_embed, gru_init
    rngs = nnx.Rngs(params=seed)
    self.rngs = nnx.Rngs(noise=jax.random.fold_in(jax.random.key(seed), 1))
    widths = [in_channel // 2 ** s for s in range(NUM_SCALES + 1)]  # 80, 40, 20, 10
    self.enc = nnx.List([EncoderStage(widths[s], channel, widths[s + 1], rngs)
                         for s in range(NUM_SCALES)])
    self._init_quantizers(widths[1:], self.codebook_sizes(n_embed), rngs)
    self._init_variant(widths[1:], rngs)
    self.dec = MultiDecoder(in_channel, channel, body=self.decoder_body, gru_init=gru_init,
                            refine_residual=self.refine_residual, inputs=self.decoder_inputs,
                            rngs=rngs)

  # ---- what the variants change -------------------------------------------------------------------

  @staticmethod
  def codebook_sizes(n_embed: int) -> list[int]:
    return [n_embed // 2 ** s for s in range(NUM_SCALES)]

  def _init_quantizers(self, widths: list[int], sizes: list[int], rngs: nnx.Rngs):
    self.quantize = nnx.List([Quantizer(w, k, max_norm=self.max_norm, rngs=rngs)
                              for w, k in zip(widths, sizes)])

  def _normalise(self, s: int, x):
    """The quantizer's input at scale s (channel-last) and the std term."""
    xn, std = time_normalise(x)
    return unit_frames(xn), std

  def _encode_scale(self, s: int, x) -> dict:
    """One scale of `encode` from the raw encoder output x (B, T, C); everything channel-last."""
    xn, std = self._normalise(s, x)
    quantized = self.quantize[s](xn)
    return dict(content=quantized.value, speaker=residual_speaker(x, quantized.value), std=std,
                codes=quantized.codes, quantizer_in=xn, loss=quantized.loss,
                extras={} if quantized.table is None else dict(renormed_codebooks=quantized.table))

  def _stage_input(self, j: int, q, sp, std, rhythm):
    return q + sp

  def training_latent(self, enc: Encoding, rng=None, perm=None):
    """Latent-loss terms the original's forward() adds in training only (codebook_gen)."""
    return 0.0

  def _torch_variant(self, table: dict) -> None:
    pass

  # ---- porting ------------------------------------------------------------------------------------

  def torch_table(self) -> dict:
    table: dict = {}
    for s, stage in enumerate(self.enc):
      torch_conv(table, f'enc.{s}.0', stage.conv_in)
      torch_conv(table, f'enc.{s}.2', stage.conv_out)
    for s, quantizer in enumerate(self.quantize):
      table[f'quantize.{s}.{self.codebook_torch_name}'] = (quantizer.embedding, 'same')
    self._torch_variant(table)
    self.dec.torch_names(table)
    return table

  # ---- public API ---------------------------------------------------------------------------------

  def _encode_pieces(self, mel):
    """One dict per scale (finest first): `_encode_scale`'s pieces and the raw encoder output."""
    x = to_public(jnp.asarray(mel))
    pieces = []
    for s in range(NUM_SCALES):
      x = self.enc[s](x)
      pieces.append(dict(self._encode_scale(s, x), encoder_out=x))
    return pieces

  def _encoding(self, pieces, rhythm=None) -> Encoding:
    per_scale = lambda key: [p[key] for p in pieces]
    extras: dict = {}
    for p in pieces:
      for key, value in p['extras'].items():
        extras.setdefault(key, []).append(value)
    latent_loss = sum(p['loss'] + p.get('extra_loss', 0.0) for p in pieces)
    return Encoding(
        content=[to_public(v) for v in per_scale('content')],
        speaker=[to_public(v) for v in per_scale('speaker')],
        std=[to_public(v) for v in per_scale('std')], latent_loss=latent_loss,
        codes=per_scale('codes'), encoder_out=[to_public(v) for v in per_scale('encoder_out')],
        quantizer_in=per_scale('quantizer_in'), content_losses=per_scale('loss'),
        rhythm=None if rhythm is None else [to_public(r) for r in rhythm], extras=extras or None)

  def encode(self, mel, *, rng=None) -> Encoding:
    """Per-scale content, speaker terms, stds and codes of mels (B, in_channel, T)."""
    self.check_mel(mel)
    return self._encoding(self._encode_pieces(mel))

  def _decode_content(self, content, speaker, std, rhythm, rng) -> list:
    """Decodes channel-last per-scale decoder content (finest first); public outputs, coarse first."""
    inputs = [self._stage_input(j, content[s], to_public(speaker[s]), to_public(std[s]),
                                None if rhythm is None else to_public(rhythm[s]))
              for j, s in enumerate(reversed(range(NUM_SCALES)))]
    key = self._keys(rng, 1)[0] if self.decoder_body == 'rc' and self.gru_init == 'normal' else None
    return [to_public(y) for y in self.dec(inputs, key)]

  def decode(self, content, speaker, std, rhythm=None, *, rng=None) -> list:
    """Per-scale content (finest first) with speaker terms and stds -> the decoder's three outputs,
    coarsest first; the last is the mel (B, in_channel, T)."""
    return self._decode_content([to_public(c) for c in content], speaker, std, rhythm, rng)

  def lookup(self, codes, speaker=None, std=None) -> list:
    """The content `encode` would give for these codes: codebook rows (B, C_s, T_s) per scale."""
    return [to_public(self._content_of_rows(self.quantize[s].lookup(jnp.asarray(c))))
            for s, c in enumerate(codes)]

  def _content_of_rows(self, rows):
    return rows

  def decode_codes(self, codes, speaker, std, rhythm=None, *, rng=None) -> list:
    """Decodes code indices (B, T_s) per scale, finest first, as the VQVAE notebook does: edit an
    `encode`'s codes, decode them with its (or another utterance's) speaker terms."""
    if len(codes) != NUM_SCALES:
      raise ValueError(f'{self.name}: decode_codes needs codes for all {NUM_SCALES} scales')
    for s, (c, q) in enumerate(zip(codes, self.quantize)):
      values = jnp.asarray(c)
      if not jnp.issubdtype(values.dtype, jnp.integer):
        raise ValueError(f'{self.name}: codes of scale {s} must be integers, got {values.dtype}')
      if int(values.min()) < 0 or int(values.max()) >= q.num_codes:
        raise ValueError(f'{self.name}: codes of scale {s} must lie in [0, {q.num_codes}); got '
                         f'{int(values.min())}..{int(values.max())}')
    return self._decode_codes(codes, speaker, std, rhythm, rng)

  def _decode_codes(self, codes, speaker, std, rhythm, rng) -> list:
    return self.decode(self.lookup(codes, speaker, std), speaker, std, rhythm, rng=rng)

  def reconstruct(self, mel, *, rng=None):
    """(the decoder's outputs for mel with its own speaker terms, coarsest first; the encoding)."""
    enc_key, dec_key = self._keys(rng, 2)
    enc = self.encode(mel, rng=enc_key)
    return self.decode(enc.content, enc.speaker, enc.std, enc.rhythm, rng=dec_key), enc

  def convert(self, source_mel, target_mel, *, rng=None) -> list:
    """The source's content with the target's speaker terms (a target batch of 1 serves all)."""
    keys = self._keys(rng, 3)
    src = self.encode_deterministic(source_mel)
    tgt = self.encode_deterministic(target_mel)
    speaker, std = match_batch(tgt.speaker, tgt.std, batch=src.content[0].shape[0])
    return self.decode(src.content, speaker, std, src.rhythm, rng=keys[2])


class VQVCPlusMultiSimple(VQVCPlusMulti):
  """`vqvc+_multi_simple` (the conversion notebook's model): `vqvc+_multi` with plain conv-conv
  decoder blocks and no unused `dec.block0`."""

  name = 'vqvc+_multi_simple'
  decoder_body = 'plain'
  torch_unused = ()


class VQVCPlusMultiRhythm(VQVCPlusMulti):
  """`vqvc+_multi_rhythm`: recurrent decoder blocks, codebooks without max_norm of n_embed/4,
  n_embed/2, n_embed codes, and the rhythm path of `vqvc+_rhythm`.

  `encode(mel, content_mel)`: timing from `mel` (the channel-mean of each encoder stage), content and
  speaker from `content_mel` (default `mel`). Content is centred over channels after the speaker term
  is taken; the decoder input is content * std + speaker, plus the rhythm at the coarsest scale; the
  refined copy is concatenated without the residual. extras: `rhythm_encoder_out`.
  """

  name = 'vqvc+_multi_rhythm'
  takes_content_mel = True
  decoder_body = 'rc'
  max_norm = False
  refine_residual = False

  @staticmethod
  def codebook_sizes(n_embed: int) -> list[int]:
    return [n_embed // 2 ** (NUM_SCALES - 1 - s) for s in range(NUM_SCALES)]

  def _encode_scale(self, s, x):
    piece = super()._encode_scale(s, x)
    return dict(piece, content=self._content_of_rows(piece['content']))

  def _content_of_rows(self, rows):
    return rows - jnp.mean(rows, axis=-1, keepdims=True)

  def _stage_input(self, j, q, sp, std, rhythm):
    return rhythm_stage_input(j, q, sp, std, rhythm)

  def encode(self, mel, content_mel=None, *, rng=None) -> Encoding:
    """Rhythm from `mel`; content and speaker from `content_mel` (default: `mel`)."""
    pieces = self._encode_pieces(check_rhythm_inputs(self, mel, content_mel))
    rhythm, encoder_out = rhythm_path(self, mel)
    for piece, out in zip(pieces, encoder_out):
      piece['extras'] = dict(rhythm_encoder_out=out)
    return self._encoding(pieces, rhythm)

  def reconstruct(self, mel, content_mel=None, *, rng=None):
    """`mel`'s timing with `content_mel`'s content (default: `mel`); returns (outputs, encoding)."""
    enc_key, dec_key = self._keys(rng, 2)
    enc = self.encode(mel, content_mel, rng=enc_key)
    return self.decode(enc.content, enc.speaker, enc.std, enc.rhythm, rng=dec_key), enc


class VQVCPlusMultiPS(VQVCPlusMulti):
  """`vqvc+_multi_ps`: a GroupNorm (2 groups, `gnorm.{s}`) replaces the time norm, all codebooks have
  n_embed codes, and only the coarsest scale is decoded (the finer scales' quantizers still train
  through the latent loss). There is no std: `Encoding.std` holds ones, which decoding ignores.
  extras: `group_norm_out` (B, T_s, C_s)."""

  name = 'vqvc+_multi_ps'
  decoder_inputs = 1
  torch_unused = (r'dec\.block0\.', r'dec\.resblock\.[12]\.')

  @staticmethod
  def codebook_sizes(n_embed: int) -> list[int]:
    return [n_embed] * NUM_SCALES

  def _init_variant(self, widths, rngs):
    self.gnorm = nnx.List([group_norm(w, rngs, groups=2) for w in widths])

  def _normalise(self, s, x):
    return unit_frames(self.gnorm[s](x)), jnp.ones_like(x[:, :1])

  def _encode_scale(self, s, x):
    piece = super()._encode_scale(s, x)
    piece['extras']['group_norm_out'] = self.gnorm[s](x)
    return piece

  def _torch_variant(self, table):
    for s, norm in enumerate(self.gnorm):
      torch_norm(table, f'gnorm.{s}', norm)
