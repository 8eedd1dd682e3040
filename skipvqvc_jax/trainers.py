"""The four trainers: the few lines in which the original's training scripts differ.

A trainer says how mels are normalised before the model sees them (and how to undo it for audio), how a
batch is augmented on the host before the step, and what the model is asked to reconstruct. Everything
else is shared: the step in `tasks/voice_conversion.py`; the loop, checkpoints and logging in `train.py`.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import jax.numpy as jnp
import numpy as np

from skipvqvc_jax.errors import ConfigError, CorpusError

NAMES = ('normal', 'mean_std', 'simple_normalize', 'rhythm')


@dataclasses.dataclass(frozen=True)
class Trainer:
  name: str
  normalize: Callable = lambda mel: mel  # raw log-mel -> model space; works on numpy and jax arrays
  denormalize: Callable = lambda mel: mel  # model space -> raw log-mel (for vocoders and images)
  stretch_rhythm: bool = False  # the rhythm trainer's time-stretch augmentation

  def augment(self, mel: np.ndarray, rng: np.random.Generator) -> dict:
    """Host-side: a batch of raw mels -> the step's inputs (`mel`, plus `content_mel` for rhythm)."""
    if not self.stretch_rhythm:
      return dict(mel=mel)
    target, stretched = rhythm_stretch(mel, rng)
    return dict(mel=target, content_mel=stretched)

  def reconstruct(self, model, inputs: dict, rng):
    """The model's reconstruction of normalised inputs['mel'], and its encoding."""
    mel = self.normalize(inputs['mel'])
    if 'content_mel' in inputs:
      return model.reconstruct(mel, self.normalize(inputs['content_mel']), rng=rng)
    return model.reconstruct(mel, rng=rng)

  def loss(self, model, inputs: dict, rng, latent_weight: float):
    """L1 reconstruction + latent_weight * latent loss, in normalised space (as the original)."""
    recon, enc = self.reconstruct(model, inputs, rng)
    target = self.normalize(inputs['mel'])
    recon_loss = jnp.mean(jnp.abs(recon.astype(jnp.float32) - target))
    latent_loss = jnp.asarray(enc.latent_loss, jnp.float32)
    return recon_loss + latent_weight * latent_loss, dict(
        recon_loss=recon_loss, latent_loss=latent_loss, codes=enc.codes)


def load_stats(path: str) -> tuple[np.ndarray, np.ndarray]:
  if not os.path.isfile(path):
    raise CorpusError(f'the mean_std trainer needs per-band statistics: {path} not found; '
                             f'preprocess.py writes it, or set --config.data.stats_file')
  with np.load(path) as stats:
    mean, std = stats['mean'].astype(np.float32), stats['std'].astype(np.float32)
  if mean.ndim != 1 or mean.shape != std.shape:
    raise CorpusError(f'{path}: mean and std must be 1-D arrays of one size')
  return mean, np.maximum(std, 1e-5)


def get(name: str, stats_file: str | None = None) -> Trainer:
  """Trainer `name`; `mean_std` reads its statistics from stats_file."""
  if name == 'normal':
    return Trainer(name)
  if name == 'rhythm':
    return Trainer(name, stretch_rhythm=True)
  if name == 'simple_normalize':
    return Trainer(name, normalize=lambda m: (m * 25 + 50) / 50,
                   denormalize=lambda m: (m * 50 - 50) / 25)
  if name == 'mean_std':
    mean, std = load_stats(stats_file or '')
    mean, std = mean[:, None], std[:, None]  # per band, broadcast over frames
    return Trainer(name, normalize=lambda m: (m - mean) / std / 3,
                   denormalize=lambda m: m * std * 3 + mean)
  raise ConfigError(f'unknown trainer {name!r}; valid trainers: {", ".join(NAMES)}')


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
