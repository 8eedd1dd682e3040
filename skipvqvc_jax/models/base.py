"""The base of every VQVC+ model (`VQVCModel`) and the `Encoding` that `encode` returns (the terms
they compute it with are in `terms.py`).

Two siblings derive from the base: `vqvc.VQVCPlus` (single-scale: the decoder answers with the full mel)
and `multi.VQVCPlusMulti` (multi-scale: the decoder answers at each of its three stages). Every model's
`decode`, `reconstruct`, `convert` and `decode_codes` return a list of mels, coarsest first, whose last
item is the full mel (a single-scale model: a list of one).

Public arrays use the original's layout: mels (batch, mels, frames), content (batch, channels, frames),
speaker and std (batch, channels, 1). Inside, activations are channel-last (batch, frames, channels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from skipvqvc_jax.core.errors import PortError
from skipvqvc_jax.models.content_prediction import ContentPredictor
from skipvqvc_jax.models.layers import NUM_SCALES, EncoderStage, GruInit, torch_conv
from skipvqvc_jax.models.quantizer import ProjectedQuantizer, Quantizer
from skipvqvc_jax.models.terms import to_public


class Encoding(NamedTuple):
  """What `encode` returns. Per-scale lists are finest scale first (the original's encoder order)."""

  content: list  # quantized content, (B, C_s, T_s)
  speaker: list  # speaker embedding, (B, C_s, 1)
  std: list  # time-norm of the centred encoder output, (B, C_s, 1)
  latent_loss: jax.Array  # scalar: quantizer commitment terms (+ variant terms)
  codes: list  # content codebook index per frame, (B, T_s) int32
  encoder_out: list  # raw encoder stage output, (B, C_s, T_s)
  quantizer_in: list  # the normalised frames fed to the content quantizer, (B, T_s, C_s)
  content_losses: list  # each content quantizer's commitment term, scalars
  rhythm: list | None = None  # the rhythm models: channel-mean of the rhythm path, (B, 1, T_s)
  extras: dict | None = None  # variant-specific diagnostics (see each variant)


# ---- the base -------------------------------------------------------------------------------------


# The models whose decoder input is content + speaker over a time-normalised encoder output: they can
# also scale the content by the speaker's per-channel spread (`speaker_scale`).
SPEAKER_SCALE_MODELS = ('vqvc+', 'vqvc+_multi', 'vqvc+_multi_simple')
# The models whose content quantizers are the plain `Quantizer`: they can match codes in a space of
# their own width (`code_dim`).
CODE_DIM_MODELS = ('vqvc+', 'vqvc+_multi', 'vqvc+_multi_simple')
# The build options only some models can take, and those models.
OPTION_MODELS = dict(speaker_scale=SPEAKER_SCALE_MODELS, code_dim=CODE_DIM_MODELS)
# Build options the original lacks: in a spec only when on, so every saved model before them rebuilds.
BUILD_OPTIONS = ('speaker_scale', 'predict_steps', 'code_dim')
# Of those, the ones that change what the model computes in conversion: the original's code cannot run
# a model built with them (a training-only head, `predict_steps`, is just left behind).
_CONVERSION_OPTIONS = ('speaker_scale', 'code_dim')


class VQVCModel(nnx.Module):
  """A three-scale vector-quantized U-Net autoencoder: what every VQVC+ model shares.

  A model declares what it is in class attributes (`multi_scale`, `takes_content_mel`, its codebook
  sizes, its frame multiple, its original's unused weights) and differs from its sibling in a few
  hooks: `_init_quantizers`/`_init_variant`/`_make_decoder` (what it is built of), `_encode_scale` (one
  scale of the encoder), `_content_of_rows` (content from codebook rows), `_stage_input` (what the
  decoder adds at each scale) and `_decoder_outputs` (the decoder's answer, a list).
  """

  name: ClassVar[str]
  multi_scale: ClassVar[bool]  # decodes to every scale: trained by the multi-scale trainers
  takes_content_mel: ClassVar[bool] = False  # encode/reconstruct(mel, content_mel): rhythm models
  # decode/reconstruct/convert(..., f0=contour): the source's F0 conditions the decoder (vqvc+_pitch)
  takes_f0: ClassVar[bool] = False
  # No speaker terms: every conversion comes out in the one training speaker's voice (any-to-one).
  speaker_free: ClassVar[bool] = False
  # Each encoder stage reads the previous stage's quantizer input, not its raw output (the LJ models).
  chains_quantizer_input: ClassVar[bool] = False
  # Scale s (finest first) has n_embed // codebook_divisors[s] content codes.
  codebook_divisors: ClassVar[tuple[int, ...]] = (4, 2, 1)
  resample_factor: ClassVar[int] = 1  # content codes are resampled by this factor (vqvc+_resample)
  max_norm: ClassVar[bool] = False  # the codebooks renormalise the rows they look up
  codebook_torch_name: ClassVar[str] = (
    'embedding.weight'  # nn.Embedding; 'embedding' for a Parameter
  )
  # Original modules that never take part in a forward pass: their weights are accepted and dropped.
  torch_unused: ClassVar[tuple[str, ...]] = (r'dec\.block0\.',)

  def __init__(
    self,
    in_channel: int = 80,
    channel: int = 512,
    n_embed: int = 128,
    *,
    gru_init: GruInit = 'normal',
    speaker_scale: bool = False,
    predict_steps: int = 0,
    code_dim: int = 0,
    seed: int = 0,
  ):
    if gru_init not in ('normal', 'zeros'):
      raise ValueError(f"gru_init must be 'normal' or 'zeros', got {gru_init!r}")
    for option, value in (('speaker_scale', speaker_scale), ('code_dim', code_dim)):
      if value and self.name not in OPTION_MODELS[option]:
        raise ValueError(
          f'{self.name} cannot be built with {option}: only {", ".join(OPTION_MODELS[option])} can'
        )
    self.speaker_scale = bool(speaker_scale)
    self.code_dim = int(code_dim)
    if in_channel % 2 ** (NUM_SCALES + 1):
      raise ValueError(
        f'in_channel must be a multiple of {2 ** (NUM_SCALES + 1)} '
        f'(GroupNorm needs 4 groups at the coarsest scale); got {in_channel}'
      )
    self.in_channel, self.channel, self.n_embed = in_channel, channel, n_embed
    self.gru_init = gru_init
    rngs = nnx.Rngs(params=seed)
    # A separate stream for the stochastic parts (GRU initial state, VAE noise) when no key is given.
    self.rngs = nnx.Rngs(noise=jax.random.fold_in(jax.random.key(seed), 1))
    widths = [in_channel // 2**s for s in range(NUM_SCALES + 1)]  # 80, 40, 20, 10
    self.enc = nnx.List(
      [EncoderStage(widths[s], channel, widths[s + 1], rngs) for s in range(NUM_SCALES)]
    )
    self._init_quantizers(widths[1:], self.codebook_sizes(n_embed), rngs)
    self._init_variant(widths[1:], rngs)
    self.dec = self._make_decoder(rngs)
    self.predict_steps = int(predict_steps)
    if predict_steps:  # training only: contrastive prediction of the finest scale's content
      self.predictor = ContentPredictor(widths[1], channel, predict_steps, rngs)

  # ---- what the siblings and variants change ------------------------------------------------------

  def _init_quantizers(self, widths: list[int], sizes: list[int], rngs: nnx.Rngs):
    """Plain codebooks of the stage's width, or with `code_dim` of that width behind projections."""
    if self.code_dim:
      make = lambda w, k: ProjectedQuantizer(w, self.code_dim, k, max_norm=self.max_norm, rngs=rngs)
    else:
      make = lambda w, k: Quantizer(w, k, max_norm=self.max_norm, rngs=rngs)
    self.quantize = nnx.List([make(w, k) for w, k in zip(widths, sizes)])

  def _init_variant(self, widths: list[int], rngs: nnx.Rngs):
    pass

  def _make_decoder(self, rngs: nnx.Rngs) -> nnx.Module:
    raise NotImplementedError

  def _encode_scale(self, s: int, x, noise) -> dict:
    """One scale of `encode` from the raw encoder output x (B, T, C), channel-last: content, speaker,
    std, codes, quantizer_in, loss, extra_loss and extras (a dict of this scale's diagnostics)."""
    raise NotImplementedError

  def _content_of_rows(self, rows):
    """The content `encode` gives for these quantized rows (B, T, C)."""
    return rows

  def _stage_input(self, j: int, q, sp, std, rhythm):
    """Decoder input at scale j (coarse to fine): content + speaker, as the original (which ignores
    std); with `speaker_scale`, the content is first scaled per channel by the speaker's spread
    (AdaIN's scale beside VQVC+'s additive mean): std over its mean across channels, so the gain
    is 1 on average and does not depend on the utterance's length."""
    if self.speaker_scale:
      q = q * (std / jnp.mean(std, axis=-1, keepdims=True))
    return q + sp

  @property
  def _decoder_draws_noise(self) -> bool:
    """Whether the decoder has recurrent blocks that draw their initial state."""
    return self.gru_init == 'normal'

  def _decoder_outputs(self, inputs: list, key, f0=None) -> list:
    """The decoder's outputs (channel-last, coarsest first) for per-scale inputs, coarse to fine
    (and the F0 contour (B, T) of a model that `takes_f0`)."""
    return self.dec(inputs, key)

  def _noise(self, mel, rng, noise) -> list:
    """Per-scale noise for `_encode_scale` (only a model with a random speaker term draws any)."""
    if noise is not None:
      raise ValueError(f'{self.name} draws no noise: encode takes no noise argument')
    return [None] * NUM_SCALES

  def content_prediction_loss(self, enc: Encoding):
    """With a predictor (`predict_steps`): its contrastive loss on the finest scale's content."""
    return self.predictor.loss(to_public(enc.content[0]))  # the same swap both ways

  def training_latent(self, enc: Encoding, rng=None, perm=None):
    """Latent-loss terms the original's forward() adds in training only (codebook_gen)."""
    return 0.0

  def _torch_variant(self, table: dict) -> None:
    pass

  # ---- what rebuilds and ports the model ----------------------------------------------------------

  @classmethod
  def codebook_sizes(cls, n_embed: int) -> list[int]:
    return [n_embed // d for d in cls.codebook_divisors]

  def spec(self) -> dict:
    """What rebuilds this model: `models.build(**spec)`."""
    sizes = ('channel', 'n_embed', 'in_channel', 'gru_init')
    options = {k: getattr(self, k) for k in BUILD_OPTIONS if getattr(self, k)}  # absent when off
    return dict(name=self.name, **{size: getattr(self, size) for size in sizes}, **options)

  def options_the_original_lacks(self) -> list[str]:
    """The build options on in this model that the original's code could not convert with."""
    return [k for k in _CONVERSION_OPTIONS if getattr(self, k)]

  def describe(self) -> str:
    options = ''.join(f', {k}={v}' for k, v in self.spec().items() if k in BUILD_OPTIONS)
    return f'{self.name} (channel={self.channel}, n_embed={self.n_embed}{options})'

  @classmethod
  def sizes_from_torch(cls, state_dict) -> dict:
    """channel, n_embed and in_channel of the original model that saved `state_dict`."""
    names = ('quantize.0.embedding.weight', 'quantize.0.embedding')  # nn.Embedding or a Parameter
    codebook = next((state_dict[k].shape for k in names if k in state_dict), None)
    if 'enc.0.0.weight' not in state_dict or codebook is None:
      missing = 'enc.0.0.weight' if 'enc.0.0.weight' not in state_dict else names[0]
      raise PortError(f'not a SkipVQVC state dict: no {missing}')
    conv = state_dict['enc.0.0.weight'].shape
    return dict(channel=conv[0], n_embed=codebook[0] * cls.codebook_divisors[0], in_channel=conv[1])

  def torch_table(self) -> dict[str, tuple[nnx.Variable, str]]:
    """The original's state-dict name of every parameter -> (our parameter, layout): 'conv' for
    PyTorch's (out, in, k) kernels, 'gru' for its (3H, in) GRU matrices, 'linear' for its (out, in)
    dense matrices, 'same' otherwise."""
    table: dict[str, tuple[nnx.Variable, str]] = {}
    for s, stage in enumerate(self.enc):
      torch_conv(table, f'enc.{s}.0', stage.conv_in)
      torch_conv(table, f'enc.{s}.2', stage.conv_out)
    for s, quantizer in enumerate(self.quantize):
      table[f'quantize.{s}.{self.codebook_torch_name}'] = (quantizer.embedding, 'same')
    self._torch_variant(table)
    self.dec.torch_names(table)
    return table

  # ---- sizes --------------------------------------------------------------------------------------

  @classmethod
  def frames_multiple_of(cls) -> int:
    """Frames must be a multiple of this: 2 per scale, times the content resampling per scale."""
    return 2**NUM_SCALES * cls.resample_factor

  @property
  def frame_multiple(self) -> int:
    return self.frames_multiple_of()

  @property
  def num_scales(self) -> int:
    return NUM_SCALES

  def check_mel(self, mel, what: str = 'mel'):
    """Raises ValueError with a clear message unless mel is (batch, in_channel, k * frame_multiple)."""
    shape = tuple(mel.shape)
    if len(shape) != 3 or shape[1] != self.in_channel:
      raise ValueError(
        f'{self.name}: {what} must be (batch, {self.in_channel}, frames); got {shape}'
      )
    frames = shape[2]
    if frames == 0 or frames % self.frame_multiple:
      resampled = self.resample_factor > 1
      raise ValueError(
        f'{self.name}: {what} has {frames} frames, which is not a positive multiple of '
        f'{self.frame_multiple} (the model halves time {NUM_SCALES} times'
        + (f' and resamples codes by {self.resample_factor}' if resampled else '')
        + '); pad or crop it first'
      )

  def _keys(self, rng, n: int):
    """n keys from an explicit rng, else from the model's own noise stream."""
    if rng is None:
      rng = self.rngs.noise()
    return list(jax.random.split(rng, n))

  # ---- encoding -----------------------------------------------------------------------------------

  def encode(self, mel, content_mel=None, *, rng=None, noise: Sequence[Any] | None = None):
    """Per-scale content, speaker terms, stds and codes of mels (B, in_channel, T) as an `Encoding`.

    A rhythm model (`takes_content_mel`) takes its timing from `mel` (the channel-mean of each
    encoder stage applied to it) and content and speaker from `content_mel` (default: `mel`);
    extras['rhythm_encoder_out'] holds the rhythm path's encoder outputs (B, C_s, T_s)."""
    self.check_mel(mel)
    if self.takes_content_mel:
      content_mel = mel if content_mel is None else content_mel
      self.check_mel(content_mel, 'content_mel')
      if content_mel.shape != mel.shape:
        raise ValueError(
          f'{self.name}: mel {tuple(mel.shape)} and content_mel '
          f'{tuple(content_mel.shape)} must have the same shape'
        )
    elif content_mel is not None:
      raise ValueError(f'{self.name} has no rhythm path: encode takes no content_mel')
    noise = self._noise(mel, rng, noise)
    pieces, x = [], to_public(jnp.asarray(mel if content_mel is None else content_mel))
    for s in range(NUM_SCALES):
      x = self.enc[s](x)
      pieces.append(dict(self._encode_scale(s, x, noise[s]), encoder_out=x))
      if self.chains_quantizer_input:
        x = pieces[-1]['quantizer_in']
    rhythm = None
    if self.takes_content_mel:
      rhythm, x = [], to_public(jnp.asarray(mel))
      for s, piece in enumerate(pieces):
        x = self.enc[s](x)
        piece['extras'] = dict(piece['extras'], rhythm_encoder_out=to_public(x))
        rhythm.append(jnp.mean(x, axis=-1, keepdims=True))
    return self._encoding(pieces, rhythm)

  def _encoding(self, pieces: list[dict], rhythm=None) -> Encoding:
    per_scale = lambda key: [p[key] for p in pieces]
    public = lambda key: [to_public(p[key]) for p in pieces]
    extras: dict = {}
    latent_loss = 0.0
    for p in pieces:
      for key, value in p['extras'].items():
        extras.setdefault(key, []).append(value)
      latent_loss = latent_loss + p['loss'] + p.get('extra_loss', 0.0)
    return Encoding(
      content=public('content'),
      speaker=public('speaker'),
      std=public('std'),
      latent_loss=latent_loss,
      codes=per_scale('codes'),
      encoder_out=public('encoder_out'),
      quantizer_in=per_scale('quantizer_in'),
      content_losses=per_scale('loss'),
      rhythm=None if rhythm is None else [to_public(r) for r in rhythm],
      extras=extras or None,
    )

  def encode_deterministic(self, mel) -> Encoding:
    """The encoding conversion uses: no sampled noise (a variant with a random speaker term gives its
    mean), and the variant's extra inputs taken from `mel` itself."""
    return self.encode(mel)

  # ---- decoding -----------------------------------------------------------------------------------

  def decode(self, content, speaker, std, rhythm=None, *, f0=None, rng=None) -> list:
    """Per-scale content (finest first) with speaker terms and stds -> the decoder's outputs,
    coarsest first; the last is the mel (B, in_channel, T). A model that `takes_f0` needs the F0
    contour f0 (B, T) of the mel it decodes (the trainer's model-space contour)."""
    return self._decode_channel_last([to_public(c) for c in content], speaker, std, rhythm, rng, f0)

  def _decode_channel_last(self, content, speaker, std, rhythm, rng, f0=None) -> list:
    """`decode` of channel-last content, finest first; public outputs, coarsest first."""
    frames = content[0].shape[1] * 2  # the finest scale halves time once
    if self.takes_f0 and (f0 is None or tuple(f0.shape) != (content[0].shape[0], frames)):
      got = 'none' if f0 is None else tuple(f0.shape)
      raise ValueError(
        f'{self.name} decodes with the F0 contour of the source, (batch, frames) = '
        f'{(content[0].shape[0], frames)}; got {got}'
      )
    if f0 is not None and not self.takes_f0:
      raise ValueError(f'{self.name} is not conditioned on F0: it takes no f0')
    inputs = []
    for j, s in enumerate(reversed(range(NUM_SCALES))):  # coarse to fine
      r = None if rhythm is None else to_public(rhythm[s])
      inputs.append(self._stage_input(j, content[s], to_public(speaker[s]), to_public(std[s]), r))
    key = self._keys(rng, 1)[0] if self._decoder_draws_noise else None
    return [to_public(y) for y in self._decoder_outputs(inputs, key, f0)]

  def lookup(self, codes, speaker=None, std=None) -> list:
    """The content `encode` would give for these codes: codebook rows (B, C_s, T_s) per scale."""
    return [
      to_public(self._content_of_rows(self.quantize[s].lookup(jnp.asarray(c))))
      for s, c in enumerate(codes)
    ]

  def decode_codes(self, codes, speaker, std, rhythm=None, *, f0=None, rng=None) -> list:
    """Decodes code indices (B, T_s) per scale, finest first, as the VQVAE notebook does: edit an
    `encode`'s codes, decode them with its (or another utterance's) speaker terms."""
    if len(codes) != NUM_SCALES:
      raise ValueError(f'{self.name}: decode_codes needs codes for all {NUM_SCALES} scales')
    for s, (c, q) in enumerate(zip(codes, self.quantize)):
      values = jnp.asarray(c)
      if not jnp.issubdtype(values.dtype, jnp.integer):
        raise ValueError(f'{self.name}: codes of scale {s} must be integers, got {values.dtype}')
      if int(values.min()) < 0 or int(values.max()) >= q.num_codes:
        raise ValueError(
          f'{self.name}: codes of scale {s} must lie in [0, {q.num_codes}); got '
          f'{int(values.min())}..{int(values.max())}'
        )
    return self._decode_codes(codes, speaker, std, rhythm, rng, f0)

  def _decode_codes(self, codes, speaker, std, rhythm, rng, f0=None) -> list:
    return self.decode(self.lookup(codes, speaker, std), speaker, std, rhythm, f0=f0, rng=rng)

  # ---- both -----------------------------------------------------------------------------------------

  def reconstruct(self, mel, content_mel=None, *, f0=None, rng=None):
    """(decode(encode(mel)): the decoder's outputs, coarsest first; the encoding). A rhythm model
    takes `mel`'s timing with `content_mel`'s content (default: `mel`); an F0 model, `mel`'s F0
    contour f0."""
    enc_key, dec_key = self._keys(rng, 2)
    enc = self.encode(mel, content_mel, rng=enc_key)
    return self.decode(enc.content, enc.speaker, enc.std, enc.rhythm, f0=f0, rng=dec_key), enc

  def convert(self, source_mel, target_mel, *, f0=None, rng=None) -> list:
    """The source's content spoken with the target's speaker terms (a target batch of 1 serves every
    source item), and an F0 model's contour f0 (the source's, or one made from it); the decoder's
    outputs, coarsest first."""
    keys = self._keys(rng, 3)
    src = self.encode(source_mel, rng=keys[0])
    tgt = self.encode(target_mel, rng=keys[1])
    batch = src.content[0].shape[0]
    if tgt.content[0].shape[0] not in (1, batch):
      raise ValueError(
        f'target batch {tgt.content[0].shape[0]} must be 1 or match the source batch {batch}'
      )
    # A target batch of 1 serves every source item.
    speaker, std = (
      [jnp.broadcast_to(a, (batch,) + a.shape[1:]) for a in terms]
      for terms in (tgt.speaker, tgt.std)
    )
    return self.decode(src.content, speaker, std, src.rhythm, f0=f0, rng=keys[2])
