"""The multi-scale variants with a speaker network (`SBlock` per scale): `vqvc+_multi_cav` and
`vqvc+_multi_codebook_gen`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from skipvqvc_jax.models.base import Encoding
from skipvqvc_jax.models.layers import (
  NUM_SCALES,
  Conv1d,
  leaky_relu,
  linear,
  torch_conv,
  torch_linear,
)
from skipvqvc_jax.models.multi import VQVCPlusMulti
from skipvqvc_jax.models.quantizer import RawQuantizer, SpeakerCodebookQuantizer, UnitQuantizer
from skipvqvc_jax.models.terms import time_normalise, to_public

SPEAKER_WIDTH = 128  # hard-coded in the original's SBlock
SPEAKER_DILATION = 8


def _live_taps(kernel: int, frames: int) -> tuple[int, int]:
  """The taps [lo, hi) of a centred dilated conv that can reach any of `frames` input frames.

  Tap i of output t reads input t + 8 i - 4 (kernel - 1); the others read only zero padding. With the
  original's kernel = channel (512 at ch512) over 16..64-frame scales, most taps are dead: skipping them
  gives the same outputs and gradients (exactly 0 for dead taps) at a fraction of the work.
  """
  pad = (kernel - 1) * SPEAKER_DILATION // 2
  lo = max(0, -((frames - 1 - pad) // SPEAKER_DILATION))  # ceil((pad - frames + 1) / 8)
  hi = min(kernel, (pad + frames - 1) // SPEAKER_DILATION + 1)
  return lo, hi


def _dilated(conv: Conv1d, x):
  """conv(x) with the original's dilation 8 and padding 4 (kernel - 1), over the live taps only."""
  kernel = conv.kernel.shape[0]
  lo, hi = _live_taps(kernel, x.shape[1])
  bias = conv.bias[...].astype(x.dtype)
  if hi <= lo:  # an even kernel over fewer than 5 frames: every tap falls beside them
    return jnp.broadcast_to(bias, x.shape[:2] + bias.shape)
  pad = (kernel - 1) * SPEAKER_DILATION // 2
  left = pad - SPEAKER_DILATION * lo
  right = SPEAKER_DILATION * (hi - 1 - lo) - left  # keeps the output as long as the input
  y = jax.lax.conv_general_dilated(
    x,
    conv.kernel[lo:hi].astype(x.dtype),
    window_strides=(1,),
    padding=[(left, right)],
    rhs_dilation=(SPEAKER_DILATION,),
    dimension_numbers=('NWC', 'WIO', 'NWC'),
    feature_group_count=conv.feature_group_count,
  )
  return y + bias


class SpeakerBlock(nnx.Module):
  """The original's SBlock: two dilated grouped convs (kernel = the model's `channel`, no activation
  between them), leaky, conv k3, mean over time, leaky(dense), then one linear head per output."""

  def __init__(
    self, channels: int, kernel: int, groups: int, heads: tuple[str, ...], rngs: nnx.Rngs
  ):
    pad = (kernel - 1) * SPEAKER_DILATION // 2
    self.heads = heads
    dilated = lambda width: Conv1d(
      width, SPEAKER_WIDTH, kernel, padding=pad, groups=groups, dilation=SPEAKER_DILATION, rngs=rngs
    )
    self.conv0, self.conv1 = dilated(channels), dilated(SPEAKER_WIDTH)
    self.conv3 = Conv1d(SPEAKER_WIDTH, SPEAKER_WIDTH, 3, padding=1, rngs=rngs)
    self.dense = linear(SPEAKER_WIDTH, SPEAKER_WIDTH, rngs)
    for head in heads:
      setattr(self, head, linear(SPEAKER_WIDTH, channels, rngs))

  def __call__(self, x):
    """x (B, T, C) -> (time-mean of the conv stack (B, 128), then each head's output (B, C))."""
    h = _dilated(self.conv1, _dilated(self.conv0, x))
    pooled = jnp.mean(self.conv3(leaky_relu(h)), axis=1)
    h = leaky_relu(self.dense(pooled))
    return pooled, [getattr(self, head)(h) for head in self.heads]

  def torch_names(self, table: dict, prefix: str) -> None:
    torch_conv(table, f'{prefix}.enc.0', self.conv0)
    torch_conv(table, f'{prefix}.enc.1', self.conv1)
    torch_conv(table, f'{prefix}.enc.3', self.conv3)
    for head in ('dense',) + self.heads:
      torch_linear(table, f'{prefix}.{head}', getattr(self, head))


class _SpeakerNetworkMulti(VQVCPlusMulti):
  """Shared by the two: per-scale speaker blocks with groups 4, 2, 1 (finest first)."""

  speaker_heads: tuple[str, ...] = ()
  codebook_torch_name = 'embedding'  # a raw nn.Parameter

  def _init_variant(self, widths, rngs):
    self.speaker_blocks = nnx.List(
      [
        SpeakerBlock(w, self.channel, 2 ** (NUM_SCALES - 1 - s), self.speaker_heads, rngs)
        for s, w in enumerate(widths)
      ]
    )

  def _torch_variant(self, table):
    for s, block in enumerate(self.speaker_blocks):
      block.torch_names(table, f'speaker_blocks.{s}')


class VQVCPlusMultiCAV(_SpeakerNetworkMulti):
  """`vqvc+_multi_cav`: the speaker network gives a bias (`dense1`, the speaker term) and a gain
  (`dense2`, in the std slot) per scale; content is the time-normalised encoder output quantized to
  unit codebook rows (`UnitQuantizer`, whose loss spreads the codes; the latent loss is negative).
  Decoder input: content * gain + bias. extras: `speaker_pool`, `quantizer_mse`, `quantizer_spread`."""

  name = 'vqvc+_multi_cav'
  speaker_heads = ('dense1', 'dense2')

  def _init_quantizers(self, widths, sizes, rngs):
    self.quantize = nnx.List([UnitQuantizer(w, k, rngs=rngs) for w, k in zip(widths, sizes)])

  def _encode_scale(self, s, x, noise):
    pooled, (bias, gain) = self.speaker_blocks[s](x)
    xn, _ = time_normalise(x)  # no per-frame norm here
    quantized = self.quantize[s](xn)
    return dict(
      content=quantized.value,
      speaker=bias[:, None],
      std=gain[:, None],
      codes=quantized.codes,
      quantizer_in=xn,
      loss=quantized.loss,
      extras=dict(
        speaker_pool=pooled,
        quantizer_mse=quantized.extras['mse'],
        quantizer_spread=quantized.extras['spread'],
      ),
    )

  def _stage_input(self, j, q, sp, std, rhythm):
    return q * std + sp


class VQVCPlusMultiCodebookGen(_SpeakerNetworkMulti):
  """`vqvc+_multi_codebook_gen`: the speaker enters only through the codebook.

  Per scale, the time-normalised encoder output is first quantized by raw distance to a fixed
  64-code codebook (`quantize_simple`): that is the speaker-free content, `Encoding.content`. The
  speaker network's `dense2` (add, in the speaker slot) and `dense3` (mul, in the std slot) then make
  the item's own codebook, unitnorm(E_k @ mul) + add (`SpeakerCodebookQuantizer`), and content + add is
  quantized against it; `decode` does that step, so decoding with another speaker's terms is the
  original's `change_codebook` conversion. `dense1` is never used (its weights are dropped when
  porting). extras: `speaker_pool`, `quantized` (B, T_s, C_s, with the item's own codebook),
  `simple_codes`, `simple_losses`, `codebooks` (B, K_s, C_s).
  """

  name = 'vqvc+_multi_codebook_gen'
  speaker_heads = ('dense2', 'dense3')
  simple_codebook_size = 64
  torch_unused = (r'dec\.block0\.', r'speaker_blocks\.\d\.dense1\.')

  codebook_divisors = (4, 2, 1)

  def _init_quantizers(self, widths, sizes, rngs):
    self.quantize = nnx.List(
      [SpeakerCodebookQuantizer(w, k, rngs=rngs) for w, k in zip(widths, sizes)]
    )
    self.quantize_simple = nnx.List(
      [RawQuantizer(w, self.simple_codebook_size, rngs=rngs) for w in widths]
    )

  def _encode_scale(self, s, x, noise):
    pooled, (add, mul) = self.speaker_blocks[s](x)
    xn, _ = time_normalise(x)
    simple = self.quantize_simple[s](xn)
    quantized = self.quantize[s](simple.value + add[:, None], add, mul)
    return dict(
      content=simple.value,
      speaker=add[:, None],
      std=mul[:, None],
      codes=quantized.codes,
      quantizer_in=simple.value + add[:, None],
      loss=quantized.loss,
      extra_loss=simple.loss,
      extras=dict(
        speaker_pool=pooled,
        quantized=quantized.value,
        simple_codes=simple.codes,
        simple_losses=simple.loss,
        simple_quantizer_in=xn,
        codebooks=quantized.extras['codebooks'],
      ),
    )

  def _torch_variant(self, table):
    super()._torch_variant(table)
    for s, quantizer in enumerate(self.quantize_simple):
      table[f'quantize_simple.{s}.embedding.weight'] = (quantizer.embedding, 'same')

  def _requantize(self, s, content, speaker, std):
    """Channel-last content of scale s quantized against the codebook of (speaker, std)."""
    add, mul = to_public(speaker)[:, 0], to_public(std)[:, 0]
    return self.quantize[s](content + add[:, None], add, mul).value

  def decode(self, content, speaker, std, rhythm=None, *, f0=None, rng=None) -> list:
    """The speaker-free content (finest first) quantized against (speaker, std)'s codebooks, decoded."""
    quantized = [
      self._requantize(s, to_public(c), speaker[s], std[s]) for s, c in enumerate(content)
    ]
    return self._decode_channel_last(quantized, speaker, std, rhythm, rng, f0)

  def _stage_input(self, j, q, sp, std, rhythm):
    return q

  def lookup(self, codes, speaker=None, std=None) -> list:
    """Rows of the codebooks of (speaker, std): each item's own speaker terms make its codebook."""
    if speaker is None or std is None:
      raise ValueError(f'{self.name}: codebooks are made from speaker terms; pass speaker and std')
    return [
      to_public(
        self.quantize[s].lookup(
          jnp.asarray(c), to_public(speaker[s])[:, 0], to_public(std[s])[:, 0]
        )
      )
      for s, c in enumerate(codes)
    ]

  def _decode_codes(self, codes, speaker, std, rhythm, rng, f0=None) -> list:
    rows = self.lookup(codes, speaker, std)  # already quantized: decoded as they are
    return self._decode_channel_last([to_public(r) for r in rows], speaker, std, rhythm, rng, f0)

  def training_latent(self, enc: Encoding, rng=None, perm=None):
    """forward()'s extra latent term: sum over scales of the signed mean of (content quantized with
    the item's own codebook - with a batch-permuted speaker's), permutation drawn from rng."""
    batch = enc.content[0].shape[0]
    perm = jax.random.permutation(rng, batch) if perm is None else jnp.asarray(perm)
    total = 0.0
    for s in range(NUM_SCALES):
      own = enc.extras['quantized'][s]
      swapped = self._requantize(
        s, to_public(enc.content[s]), enc.speaker[s][perm], enc.std[s][perm]
      )
      total = total + jnp.mean(own - swapped)
    return total
