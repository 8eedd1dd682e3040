"""The trainers: the few lines in which the original's training scripts differ.

A trainer says how mels are normalised before the model sees them (and how to undo it for audio), how a
batch is augmented on the host before the step, and what the model is asked to reconstruct. Everything
else is shared: the step in `tasks/voice_conversion.py`; the loop, checkpoints and logging in `train.py`.

The multi trainers (`train_multi.py`, `train_simple_normalize_multi*.py`) train the multi-scale models:
each decoder scale is scored against the low bands of the target at its frame rate.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from skipvqvc_jax.errors import ConfigError, CorpusError

NAMES = ('normal', 'mean_std', 'simple_normalize', 'rhythm', 'multi', 'simple_normalize_multi',
         'simple_normalize_multi_rhythm')
_MULTI_SCALE = ('multi', 'simple_normalize_multi', 'simple_normalize_multi_rhythm')
_RHYTHM = ('rhythm', 'simple_normalize_multi_rhythm')


def is_multi_scale(name: str) -> bool:
  """Whether trainer `name` scores every decoder scale (it trains the vqvc+_multi* models)."""
  return name in _MULTI_SCALE


def stretches_rhythm(name: str) -> bool:
  """Whether trainer `name` feeds a stretched copy to a rhythm model's content path."""
  return name in _RHYTHM


def latent_key(rng):
  """The key of a step's training-only latent terms (kept apart from the model's own noise)."""
  return jax.random.fold_in(rng, 1)


def multi_scale_l1(outputs, target):
  """Sum over scales of mean |output - target|, coarsest first: a scale at 1/f of the frame rate is
  scored against the lowest 1/f of the bands at every f-th frame (the original's nearest x1/2
  interpolation, then keeping the lower half of the bands, once per scale)."""
  losses = []
  for j, out in enumerate(outputs):
    f = 2 ** (len(outputs) - 1 - j)
    scaled = target[:, :target.shape[1] // f, ::f]
    losses.append(jnp.mean(jnp.abs(out.astype(jnp.float32) - scaled)))
  return sum(losses), losses


@dataclasses.dataclass(frozen=True)
class Trainer:
  name: str
  normalize: Callable = lambda mel: mel  # raw log-mel -> model space; works on numpy and jax arrays
  denormalize: Callable = lambda mel: mel  # model space -> raw log-mel (for vocoders and images)
  # The time-stretch augmentation: 'rhythm' reconstructs the (resized) input from a stretched copy's
  # content; 'input' replaces the input by the stretched copy (the non-rhythm multi trainers).
  stretch: str = 'none'
  multi_scale: bool = False  # for models that decode at every scale
  uses_stats: bool = False  # normalises with the corpus statistics file

  def denormalize_bands(self, mel: np.ndarray, n_mels: int) -> np.ndarray:
    """Raw log-mel of the lowest mel.shape[0] of n_mels bands (a multi-scale model's coarser
    outputs), with those bands' statistics."""
    full = np.zeros((n_mels, mel.shape[-1]), np.float32)
    full[:mel.shape[0]] = mel
    return np.asarray(self.denormalize(full))[:mel.shape[0]]

  def augment(self, mel: np.ndarray, rng: np.random.Generator) -> dict:
    """Host-side: a batch of raw mels -> the step's inputs (`mel`, plus `content_mel` for rhythm)."""
    if self.stretch == 'none':
      return dict(mel=mel)
    target, stretched = rhythm_stretch(mel, rng)
    if self.stretch == 'input':
      return dict(mel=stretched)
    return dict(mel=target, content_mel=stretched)

  def reconstruct(self, model, inputs: dict, rng):
    """The model's reconstruction of normalised inputs['mel'], and its encoding."""
    mel = self.normalize(inputs['mel'])
    if 'content_mel' in inputs:
      return model.reconstruct(mel, self.normalize(inputs['content_mel']), rng=rng)
    return model.reconstruct(mel, rng=rng)

  def loss(self, model, inputs: dict, rng, latent_weight: float):
    """L1 reconstruction + latent_weight * latent loss, in normalised space (as the original).

    aux: the two terms, the codes, per-scale L1 terms (multi-scale) and the codebooks after a
    max_norm lookup's renormalisation, which the step writes back (`renormed_codebooks`)."""
    recon, enc = self.reconstruct(model, inputs, rng)
    target = self.normalize(inputs['mel'])
    aux = {}
    if self.multi_scale:
      recon_loss, aux['recon_losses'] = multi_scale_l1(recon, target)
      latent_loss = enc.latent_loss + model.training_latent(enc, latent_key(rng))
    else:
      recon_loss = jnp.mean(jnp.abs(recon.astype(jnp.float32) - target))
      latent_loss = enc.latent_loss
    if enc.extras and 'renormed_codebooks' in enc.extras:
      aux['renormed_codebooks'] = enc.extras['renormed_codebooks']
    latent_loss = jnp.asarray(latent_loss, jnp.float32)
    return recon_loss + latent_weight * latent_loss, dict(
        aux, recon_loss=recon_loss, latent_loss=latent_loss, codes=enc.codes)


def load_stats(path: str, trainer: str = 'mean_std') -> tuple[np.ndarray, np.ndarray]:
  if not os.path.isfile(path):
    raise CorpusError(f'the {trainer} trainer needs per-band statistics: {path} not found; '
                             f'preprocess.py writes it, or set --config.data.stats_file')
  with np.load(path) as stats:
    mean, std = stats['mean'].astype(np.float32), stats['std'].astype(np.float32)
  if mean.ndim != 1 or mean.shape != std.shape:
    raise CorpusError(f'{path}: mean and std must be 1-D arrays of one size')
  return mean, np.maximum(std, 1e-5)


def _simple_normalize(name: str, **kwargs) -> Trainer:
  """x / 2 + 1, written as the original does: (x * 25 + 50) / 50."""
  return Trainer(name, normalize=lambda m: (m * 25 + 50) / 50,
                 denormalize=lambda m: (m * 50 - 50) / 25, **kwargs)


def _mean_std(name: str, stats_file: str | None, scale: float, **kwargs) -> Trainer:
  mean, std = load_stats(stats_file or '', name)
  mean, std = mean[:, None], std[:, None]  # per band, broadcast over frames
  return Trainer(name, normalize=lambda m: (m - mean) / std / scale,
                 denormalize=lambda m: m * std * scale + mean, uses_stats=True, **kwargs)


def get(name: str, stats_file: str | None = None) -> Trainer:
  """Trainer `name`; `mean_std` and `multi` read their statistics from stats_file."""
  if name not in NAMES:
    raise ConfigError(f'unknown trainer {name!r}; valid trainers: {", ".join(NAMES)}')
  # The non-rhythm multi trainers replace the input by its stretched copy.
  kwargs = dict(multi_scale=is_multi_scale(name),
                stretch='rhythm' if stretches_rhythm(name) else 'input' if is_multi_scale(name)
                else 'none')
  if name in ('normal', 'rhythm'):
    return Trainer(name, **kwargs)
  if name == 'mean_std':
    return _mean_std(name, stats_file, 3.0, **kwargs)
  if name == 'multi':  # the original's VCTK mean/std (no /3 here), from our statistics file
    return _mean_std(name, stats_file, 1.0, **kwargs)
  return _simple_normalize(name, **kwargs)  # simple_normalize, simple_normalize_multi[_rhythm]


# ---- the rhythm augmentation ----------------------------------------------------------------------

RHYTHM_SEGMENT = 32  # frames per independently stretched segment
RHYTHM_BUCKET = 32  # stretched lengths are rounded to a multiple of this: few distinct shapes


def rhythm_stretch(mel: np.ndarray, rng: np.random.Generator, low: float = 0.5, high: float = 2.0):
  """The original rhythm trainer's augmentation, with a bounded set of output lengths.

  Each 32-frame segment is stretched by its own factor ~ U(low, high) with nearest-neighbour
  interpolation (the same factors for the whole batch, as the original), and the whole input is resized
  to the stretched length to serve as the target. The original's total length varies frame by frame;
  here it is rounded to a multiple of 32 (at least 64) and the segments share the rounding in
  proportion, so a jitted step compiles for at most (2 * 128 - 64) / 32 + 1 = 7 lengths at crop 128.
  Returns (target, stretched), both (batch, mels, length).
  """
  frames = mel.shape[-1]
  segments = frames // RHYTHM_SEGMENT
  factors = rng.uniform(low, high, segments)
  raw = np.floor(RHYTHM_SEGMENT * factors)
  length = max(2 * RHYTHM_BUCKET, int(round(raw.sum() / RHYTHM_BUCKET)) * RHYTHM_BUCKET)
  # Segment boundaries in the output, scaled so the segments fill exactly `length` frames.
  bounds = np.round(np.concatenate([[0], np.cumsum(raw)]) * length / raw.sum()).astype(int)
  index = np.concatenate([
      RHYTHM_SEGMENT * n + np.minimum(
          np.floor(np.arange(bounds[n + 1] - bounds[n]) * RHYTHM_SEGMENT
                   / max(bounds[n + 1] - bounds[n], 1)).astype(int), RHYTHM_SEGMENT - 1)
      for n in range(segments)])
  stretched = mel[..., index]
  # Nearest resize of the whole (segment-covered) input to `length` frames: the target.
  target = mel[..., np.floor(np.arange(length) * (segments * RHYTHM_SEGMENT) / length).astype(int)]
  return target, stretched
