"""The single-scale VQVC+ family: the five models of the original's README.

`VQVCPlus` is the single-scale sibling of the base (`base.VQVCModel`): its decoder answers with the
full mel alone (a list of one). Each variant overrides the few hooks where the original's variants
differ: `_speaker` (how the speaker embedding is made from a scale's residual), `_content_of_rows` (what
happens to the quantized content after the speaker embedding is taken) and `_stage_input` (what the
decoder adds at each scale).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from skipvqvc_jax.models.base import VQVCModel
from skipvqvc_jax.models.layers import NUM_SCALES, Decoder
from skipvqvc_jax.models.quantizer import Quantizer
from skipvqvc_jax.models.terms import (
  RhythmVariant,
  l2norm,
  residual_speaker,
  time_normalise,
  unit_frames,
)


class VQVCPlus(VQVCModel):
  """`vqvc+`: content quantized per scale; speaker = time-mean of the residual, unit norm, / 3."""

  name = 'vqvc+'
  multi_scale = False

  def _make_decoder(self, rngs: nnx.Rngs) -> nnx.Module:
    return Decoder(self.in_channel, self.channel, gru_init=self.gru_init, rngs=rngs)

  def _speaker(self, s: int, x, xn, q, noise):
    """Speaker embedding (B, 1, C) of scale s, its extra latent loss, and diagnostics."""
    return residual_speaker(x - q), 0.0, {}

  def _encode_scale(self, s: int, x, noise) -> dict:
    xn, std = time_normalise(x)  # std: an L2 norm over time, called std in the original
    xn = unit_frames(xn)
    quantized = self.quantize[s](xn)
    sp, extra_loss, info = self._speaker(s, x, xn, quantized.value, noise)
    return dict(
      content=self._content_of_rows(quantized.value),
      speaker=sp,
      std=std,
      codes=quantized.codes,
      quantizer_in=self.quantize[s].code_space(xn),
      loss=quantized.loss,
      extra_loss=extra_loss,
      extras=info,
    )


class VQVCPlusRhythm(RhythmVariant, VQVCPlus):
  """`vqvc+_rhythm`: a second, rhythm path through the same encoder.

  `encode(mel, content_mel)` and `reconstruct(mel, content_mel)`: the timing comes from `mel` (the
  channel-mean of each encoder stage applied to it is the rhythm term), content and speaker from
  `content_mel` (the trainer passes a time-stretched copy; by default `mel` itself). Content is centred
  over channels; the decoder input is content * std + speaker, plus rhythm at the coarsest scale. All
  three codebooks have n_embed codes. extras: `rhythm_encoder_out`, the rhythm path's raw encoder
  outputs (B, C_s, T_s).
  """

  name = 'vqvc+_rhythm'
  codebook_divisors = (1, 1, 1)


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
    return residual_speaker(xn - q), 0.0, {}

  def _content_of_rows(self, rows):
    f = self.resample_factor
    b, t, c = rows.shape
    # PyTorch linear interpolation by 1/4 (align_corners=False) samples at 4t + 1.5: the mean of
    # frames 4t+1 and 4t+2. Then nearest upsampling repeats each frame 4 times.
    groups = rows.reshape(b, t // f, f, c)
    down = 0.5 * groups[:, :, f // 2 - 1] + 0.5 * groups[:, :, f // 2]
    return jnp.repeat(down, f, axis=1)


class VQVCPlusSpeakerQuantize(VQVCPlus):
  """`vqvc+_speaker_quantize`: the unit-norm speaker embedding is itself quantized (2048 codes), / 3.

  extras: `speaker_codes` (B, 1), `speaker_quantizer_in` (B, 1, C), `speaker_losses` (scalars).
  """

  name = 'vqvc+_speaker_quantize'
  speaker_codebook_size = 2048

  def _init_variant(self, widths, rngs):
    self.quantize_speakers = nnx.List(
      [Quantizer(w, self.speaker_codebook_size, rngs=rngs) for w in widths]
    )

  def _speaker(self, s, x, xn, q, noise):
    sp = jnp.mean(x - q, axis=1, keepdims=True)
    sp = sp / (l2norm(sp, -1) + 1e-4)
    quantized = self.quantize_speakers[s](sp)
    info = dict(
      speaker_codes=quantized.codes, speaker_quantizer_in=sp, speaker_losses=quantized.loss
    )
    return quantized.value / 3, quantized.loss, info

  def _torch_variant(self, table):
    for s, quantizer in enumerate(self.quantize_speakers):
      table[f'quantize_speakers.{s}.embedding.weight'] = (quantizer.embedding, 'same')


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

  def _widths(self) -> list[int]:
    return [self.in_channel // 2 ** (s + 1) for s in range(NUM_SCALES)]

  def _noise(self, mel, rng, noise) -> list:
    """`noise` (N(0, 1) per scale, (B, C_s) each) as (B, 1, C_s), or drawn from `rng`."""
    if noise is None:
      keys = self._keys(rng, NUM_SCALES)
      noise = [jax.random.normal(k, (mel.shape[0], w)) for k, w in zip(keys, self._widths())]
    return [jnp.asarray(n)[:, None, :] for n in noise]  # (B, 1, C) channel-last

  def encode_deterministic(self, mel):
    """The speaker distribution's mean: no sampling noise in a conversion."""
    return self.encode(mel, noise=[jnp.zeros((mel.shape[0], w)) for w in self._widths()])
