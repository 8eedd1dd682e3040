"""The VQVC+ family: a three-scale vector-quantized U-Net autoencoder on log-mel spectrograms.

Public methods take and return arrays in the original's layout: mels (batch, mels, frames), content
(batch, channels, frames), speaker and std (batch, channels, 1), lists ordered like the encoder, finest
scale first. Inside, activations are channel-last (batch, frames, channels).

Each variant is a subclass that overrides the few hooks where the original's variants differ:
`_speaker` (how the speaker embedding is made from a scale's residual), `_finish_content` (what happens to
the quantized content after the speaker embedding is taken) and `_stage_input` (what the decoder adds at
each scale).
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from skipvqvc_jax.errors import PortError
from skipvqvc_jax.models.encoding import (Encoding, l2norm, match_batch, to_public,
                                          check_rhythm_inputs, check_sizes, rhythm_path,
                                          rhythm_stage_input)
from skipvqvc_jax.models.layers import (NUM_SCALES, Decoder, EncoderStage, GruInit, torch_conv,
                                        torch_gblock)
from skipvqvc_jax.models.quantizer import Quantizer


class VQVCPlus(nnx.Module):
  """`vqvc+`: content quantized per scale; speaker = time-mean of the residual, unit norm, / 3."""

  name = 'vqvc+'
  # Content codes are resampled by this factor per scale (the resample variant); frames must allow it.
  resample_factor = 1
  takes_content_mel = False  # the rhythm variants: encode/reconstruct(mel, content_mel)

  def __init__(self, in_channel: int = 80, channel: int = 512, n_embed: int = 128, *,
               gru_init: GruInit = 'normal', seed: int = 0):
    check_sizes(in_channel, gru_init)
    self.in_channel, self.channel, self.n_embed = in_channel, channel, n_embed
    self.gru_init = gru_init
    rngs = nnx.Rngs(params=seed)
    # A separate stream for the stochastic parts (GRU initial state, VAE noise) when no key is given.
    self.rngs = nnx.Rngs(noise=jax.random.fold_in(jax.random.key(seed), 1))
    widths = [in_channel // 2 ** s for s in range(NUM_SCALES + 1)]  # 80, 40, 20, 10
    self.enc = nnx.List([EncoderStage(widths[s], channel, widths[s + 1], rngs)
                         for s in range(NUM_SCALES)])
    self.quantize = nnx.List([Quantizer(widths[s + 1], k, rngs=rngs)
                              for s, k in enumerate(self.codebook_sizes(n_embed))])
    self._init_variant(widths[1:], rngs)
    self.dec = Decoder(in_channel, channel, gru_init=gru_init, rngs=rngs)

  # ---- what the variants change -------------------------------------------------------------------

  @staticmethod
  def codebook_sizes(n_embed: int) -> list[int]:
    return [n_embed // 2 ** (NUM_SCALES - 1 - s) for s in range(NUM_SCALES)]

  def _init_variant(self, widths: list[int], rngs: nnx.Rngs):
    pass

  def _speaker(self, s: int, x, xn, q, noise):
    """Speaker embedding (B, 1, C) of scale s, its extra latent loss, and diagnostics."""
    sp = jnp.mean(x - q, axis=1, keepdims=True)
    return sp / (l2norm(sp, -1) + 1e-4) / 3, 0.0, {}

  def _finish_content(self, q):
    return q

  def _stage_input(self, j: int, q, sp, std, rhythm):
    """Decoder input at scale j (coarse to fine). The base model ignores std."""
    return q + sp

  # ---- what rebuilds and ports the model -----------------------------------------------------------

  # Original modules that never take part in a forward pass: their weights are accepted and dropped.
  torch_unused: tuple[str, ...] = (r'dec\.block0\.',)

  def spec(self) -> dict:
    """What rebuilds this model: `models.build(**spec)`."""
    return dict(name=self.name, channel=self.channel, n_embed=self.n_embed,
                in_channel=self.in_channel, gru_init=self.gru_init)

  def describe(self) -> str:
    return f'{self.name} (channel={self.channel}, n_embed={self.n_embed})'

  @classmethod
  def sizes_from_torch(cls, state_dict) -> dict:
    """channel, n_embed and in_channel of the original model that saved `state_dict`."""
    names = ('quantize.0.embedding.weight', 'quantize.0.embedding')  # nn.Embedding or a raw Parameter
    codebook = next((state_dict[k].shape for k in names if k in state_dict), None)
    if 'enc.0.0.weight' not in state_dict or codebook is None:
      missing = 'enc.0.0.weight' if 'enc.0.0.weight' not in state_dict else names[0]
      raise PortError(f'not a SkipVQVC state dict: no {missing}')
    conv = state_dict['enc.0.0.weight'].shape
    # The finest scale's codebook size is a fixed fraction of n_embed in each variant.
    return dict(channel=conv[0], n_embed=codebook[0] * 64 // cls.codebook_sizes(64)[0],
                in_channel=conv[1])

  def torch_table(self) -> dict[str, tuple[nnx.Variable, str]]:
    """The original's state-dict name of every parameter -> (our parameter, layout): 'conv' for
    PyTorch's (out, in, k) kernels, 'gru' for its (3H, in) GRU matrices, 'same' otherwise."""
    table: dict[str, tuple[nnx.Variable, str]] = {}
    for s, stage in enumerate(self.enc):
      torch_conv(table, f'enc.{s}.0', stage.conv_in)
      torch_conv(table, f'enc.{s}.2', stage.conv_out)
    for s, quantizer in enumerate(self.quantize):
      table[f'quantize.{s}.embedding.weight'] = (quantizer.embedding, 'same')
    for s, quantizer in enumerate(getattr(self, 'quantize_speakers', [])):
      table[f'quantize_speakers.{s}.embedding.weight'] = (quantizer.embedding, 'same')
    for group in ('resblock', 'blocks', 'blocks_refine'):
      for j, block in enumerate(getattr(self.dec, group)):
        torch_gblock(table, f'dec.{group}.{j}', block)
    return table

  # ---- public API ---------------------------------------------------------------------------------

  @classmethod
  def frames_multiple_of(cls) -> int:
    """Frames must be a multiple of this: 2 per scale, times the content resampling per scale."""
    return 2 ** NUM_SCALES * cls.resample_factor

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
      raise ValueError(f'{self.name}: {what} must be (batch, {self.in_channel}, frames); got {shape}')
    frames = shape[2]
    if frames == 0 or frames % self.frame_multiple:
      raise ValueError(
          f'{self.name}: {what} has {frames} frames, which is not a positive multiple of '
          f'{self.frame_multiple} (the model halves time {NUM_SCALES} times'
          + (f' and resamples codes by {self.resample_factor}' if self.resample_factor > 1 else '')
          + '); pad or crop it first')

  def _keys(self, rng, n: int):
    """n keys from an explicit rng, else from the model's own noise stream."""
    if rng is None:
      rng = self.rngs.noise()
    return list(jax.random.split(rng, n))

  def _encode_scales(self, mel, noise=None):
    """Runs the shared encoder path; returns channel-last per-scale pieces and the latent loss."""
    x = to_public(jnp.asarray(mel))
    out = dict(content=[], speaker=[], std=[], codes=[], encoder_out=[], quantizer_in=[],
               content_losses=[])
    extras: dict[str, list] = {}
    latent_loss = 0.0
    for s in range(NUM_SCALES):
      x = self.enc[s](x)
      centred = x - jnp.mean(x, axis=1, keepdims=True)
      std = l2norm(centred, 1) + 1e-4  # an L2 norm over time, called std in the original
      xn = centred / std
      xn = xn / l2norm(xn, -1)  # unit vector per frame
      quantized = self.quantize[s](xn)
      sp, extra_loss, info = self._speaker(s, x, xn, quantized.value,
                                           None if noise is None else noise[s])
      for k, v in info.items():
        extras.setdefault(k, []).append(v)
      out['content'].append(self._finish_content(quantized.value))
      out['speaker'].append(sp)
      out['std'].append(std)
      out['codes'].append(quantized.codes)
      out['encoder_out'].append(x)
      out['quantizer_in'].append(xn)
      out['content_losses'].append(quantized.loss)
      latent_loss = latent_loss + quantized.loss + extra_loss
    return out, latent_loss, extras

  def _public_encoding(self, out, latent_loss, extras, rhythm=None) -> Encoding:
    pub = {k: [to_public(v) for v in out[k]]
           for k in ('content', 'speaker', 'std', 'encoder_out')}
    return Encoding(**pub, latent_loss=latent_loss, codes=out['codes'],
                    quantizer_in=out['quantizer_in'], content_losses=out['content_losses'],
                    rhythm=None if rhythm is None else [to_public(r) for r in rhythm],
                    extras=extras or None)

  def encode(self, mel, *, rng=None) -> Encoding:
    """Encodes mels (B, in_channel, T) into per-scale content, speaker embeddings and stds."""
    self.check_mel(mel)
    out, latent_loss, extras = self._encode_scales(mel)
    return self._public_encoding(out, latent_loss, extras)

  def encode_deterministic(self, mel) -> Encoding:
    """The encoding conversion uses: no sampled noise (a variant with a random speaker term gives its
    mean), and the variant's extra inputs taken from `mel` itself."""
    return self.encode(mel)

  def decode(self, content, speaker, std, rhythm=None, *, rng=None):
    """Decodes per-scale content (finest first) with speaker embeddings and stds to (B, mels, T)."""
    inputs = [self._stage_input(j, to_public(content[s]), to_public(speaker[s]),
                                to_public(std[s]), None if rhythm is None else to_public(rhythm[s]))
              for j, s in enumerate(reversed(range(NUM_SCALES)))]
    key = self._keys(rng, 1)[0] if self.gru_init == 'normal' else None
    return to_public(self.dec(inputs, key))

  def reconstruct(self, mel, *, rng=None):
    """decode(encode(mel)): returns (reconstruction, encoding)."""
    enc_key, dec_key = self._keys(rng, 2)
    enc = self.encode(mel, rng=enc_key)
    return self.decode(enc.content, enc.speaker, enc.std, enc.rhythm, rng=dec_key), enc

  def convert(self, source_mel, target_mel, *, rng=None):
    """The source's content spoken with the target's speaker embeddings (and stds).

    A target batch of 1 is used for every source item.
    """
    keys = self._keys(rng, 3)
    src = self.encode(source_mel, rng=keys[0])
    tgt = self.encode(target_mel, rng=keys[1])
    speaker, std = match_batch(tgt.speaker, tgt.std, batch=src.content[0].shape[0])
    return self.decode(src.content, speaker, std, src.rhythm, rng=keys[2])


class VQVCPlusRhythm(VQVCPlus):
  """`vqvc+_rhythm`: a second, rhythm path through the same encoder.

  `encode(mel, content_mel)` and `reconstruct(mel, content_mel)`: the timing comes from `mel` (the
  channel-mean of each encoder stage applied to it is the rhythm term), content and speaker from
  `content_mel` (the trainer passes a time-stretched copy; by default `mel` itself). Content is centred
  over channels; the decoder input is content * std + speaker, plus rhythm at the coarsest scale. All
  three codebooks have n_embed codes. extras: `rhythm_encoder_out`, the rhythm path's raw encoder
  outputs (B, C_s, T_s).
  """

  name = 'vqvc+_rhythm'
  takes_content_mel = True

  @staticmethod
  def codebook_sizes(n_embed: int) -> list[int]:
    return [n_embed] * NUM_SCALES

  def _finish_content(self, q):
    return q - jnp.mean(q, axis=-1, keepdims=True)

  def _stage_input(self, j, q, sp, std, rhythm):
    return rhythm_stage_input(j, q, sp, std, rhythm)

  def encode(self, mel, content_mel=None, *, rng=None) -> Encoding:
    """Rhythm from `mel`; content and speaker from `content_mel` (default: `mel`)."""
    content_mel = check_rhythm_inputs(self, mel, content_mel)
    out, latent_loss, extras = self._encode_scales(content_mel)
    rhythm, extras['rhythm_encoder_out'] = rhythm_path(self, mel)
    return self._public_encoding(out, latent_loss, extras, rhythm)

  def reconstruct(self, mel, content_mel=None, *, rng=None):
    """`mel`'s timing with `content_mel`'s content (default: `mel`); returns (mel, encoding)."""
    enc_key, dec_key = self._keys(rng, 2)
    enc = self.encode(mel, content_mel, rng=enc_key)
    return self.decode(enc.content, enc.speaker, enc.std, enc.rhythm, rng=dec_key), enc


class VQVCPlusResample(VQVCPlus):
  """`vqvc+_resample`: speaker from the normalised residual; content averaged over 4 frames.

  After the speaker embedding is taken, each scale's content is linearly downsampled by 4 and repeated
  4 times, so frames must be a multiple of 8 * 4 = 32. The original also builds speaker quantizers that
  its `encode` never calls; they are not part of this model (porting drops their weights).
  """

  name = 'vqvc+_resample'
  resample_factor = 4
  torch_unused = (r'dec\.block0\.', r'quantize_speakers\.')

  def _speaker(self, s, x, xn, q, noise):
    sp = jnp.mean(xn - q, axis=1, keepdims=True)
    return sp / (l2norm(sp, -1) + 1e-4) / 3, 0.0, {}

  def _finish_content(self, q):
    f = self.resample_factor
    b, t, c = q.shape
    # PyTorch linear interpolation by 1/4 (align_corners=False) samples at 4t + 1.5: the mean of
    # frames 4t+1 and 4t+2. Then nearest upsampling repeats each frame 4 times.
    groups = q.reshape(b, t // f, f, c)
    down = 0.5 * groups[:, :, f // 2 - 1] + 0.5 * groups[:, :, f // 2]
    return jnp.repeat(down, f, axis=1)


class VQVCPlusSpeakerQuantize(VQVCPlus):
  """`vqvc+_speaker_quantize`: the unit-norm speaker embedding is itself quantized (2048 codes), / 3.

  extras: `speaker_codes` (B, 1), `speaker_quantizer_in` (B, 1, C), `speaker_losses` (scalars).
  """

  name = 'vqvc+_speaker_quantize'
  speaker_codebook_size = 2048

  def _init_variant(self, widths, rngs):
    self.quantize_speakers = nnx.List([Quantizer(w, self.speaker_codebook_size, rngs=rngs)
                                       for w in widths])

  def _speaker(self, s, x, xn, q, noise):
    sp = jnp.mean(x - q, axis=1, keepdims=True)
    sp = sp / (l2norm(sp, -1) + 1e-4)
    quantized = self.quantize_speakers[s](sp)
    info = dict(speaker_codes=quantized.codes, speaker_quantizer_in=sp,
                speaker_losses=quantized.loss)
    return quantized.value / 3, quantized.loss, info


class VQVCPlusCVAE(VQVCPlus):
  """`vqvc+_cvae`: a Gaussian speaker embedding mu + noise * sd of the residual over time.

  The latent loss adds the original's KL-like term -0.5 (sd^2 + 1 - mu^2 - exp(sd^2)) per scale (it
  treats sd^2 as a log-variance). `encode(mel, noise=[...])` takes fixed N(0, 1) noise per scale,
  (B, C_s) each; otherwise noise is drawn from `rng` (or the model's own stream).
  """

  name = 'vqvc+_cvae'

  def _speaker(self, s, x, xn, q, noise):
    residual = x - q
    mu = jnp.mean(residual, axis=1, keepdims=True)
    sd = jnp.std(residual, axis=1, keepdims=True, ddof=1)
    kl = -0.5 * (sd**2 + 1 - mu**2 - jnp.exp(sd**2))
    return mu + noise * sd, jnp.mean(kl), {}

  def encode(self, mel, *, rng=None, noise: Sequence[Any] | None = None) -> Encoding:
    self.check_mel(mel)
    if noise is None:
      widths = [self.in_channel // 2 ** (s + 1) for s in range(NUM_SCALES)]
      noise = [jax.random.normal(k, (mel.shape[0], w))
               for k, w in zip(self._keys(rng, NUM_SCALES), widths)]
    noise = [jnp.asarray(n)[:, None, :] for n in noise]  # (B, 1, C) channel-last
    out, latent_loss, extras = self._encode_scales(mel, noise)
    return self._public_encoding(out, latent_loss, extras)

  def encode_deterministic(self, mel) -> Encoding:
    """The speaker distribution's mean: no sampling noise in a conversion."""
    widths = [self.in_channel // 2 ** (s + 1) for s in range(NUM_SCALES)]
    return self.encode(mel, noise=[jnp.zeros((mel.shape[0], w)) for w in widths])
