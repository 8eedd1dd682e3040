"""The trainers: the few lines in which the original's training scripts differ, as a table.

A trainer is data (`Trainer`): how mels are normalised before the model sees them (and how that is
undone for audio), how a batch is augmented on the host before the step, and which kind of model it
takes (single-scale or multi-scale, with a rhythm path or not). The loss is the same for all: L1 at
every scale the model decodes (one for a single-scale model; the multi-scale models' coarser scales
against the low bands of the target at their frame rate), plus the weighted latent loss. Everything
else is shared: the step in `tasks/voice_conversion.py`; the loop, checkpoints and logging in `loop.py`.
A new trainer is one row of `TRAINERS` (and a new normalisation, one entry of `NORMALISATIONS`).
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from skipvqvc_jax.core import storage
from skipvqvc_jax.core.errors import ConfigError, CorpusError
from skipvqvc_jax.data import f0


@dataclasses.dataclass(frozen=True)
class Trainer:
  """One of the original's training scripts: what it normalises, augments and trains."""

  name: str
  original: str  # the original's script
  # raw log-mel -> model space: 'none', 'simple' (x / 2 + 1), 'mean_std' (corpus statistics / 3) or
  # 'mean_std_unscaled' (without the / 3); see NORMALISATIONS.
  normalisation: str
  # The time-stretch augmentation: 'rhythm' reconstructs the (resized) input from a stretched copy's
  # content; 'input' replaces the input by the stretched copy (the non-rhythm multi trainers).
  stretch: str
  multi_scale: bool  # takes the models that decode at every scale (else the single-scale ones)
  f0: bool = False  # feeds the source's F0 to the decoder: trains the F0 models (vqvc+_pitch) only
  speaker_free: bool = False  # trains the speaker-free (any-to-one) models only, and they only it
  adversary: str = ''  # 'began': train_ljvae.py's critic and decoder-only adversarial step
  stretch_range: tuple[float, float] = (0.5, 2.0)  # each segment's stretch factor ~ U(low, high)

  @property
  def uses_stats(self) -> bool:
    return NORMALISATIONS[self.normalisation].stats_scale is not None

  def check_model(self, model_class) -> None:
    """A one-line ConfigError unless this trainer can train models of `model_class`."""
    if model_class.multi_scale != self.multi_scale:
      kind = lambda multi: 'multi-scale' if multi else 'single-scale'
      takes = [t.name for t in TRAINERS.values() if t.multi_scale == model_class.multi_scale]
      raise ConfigError(
        f'--config.trainer={self.name!r} cannot train {model_class.name}: it trains '
        f'{kind(self.multi_scale)} models; {model_class.name} takes {", ".join(takes)}'
      )
    for field, attribute, pair in _PAIRED:
      wanted = getattr(model_class, attribute)
      if getattr(self, field) != wanted:
        takes = [t.name for t in TRAINERS.values() if getattr(t, field) == wanted]
        raise ConfigError(
          f'--config.trainer={self.name!r} cannot train {model_class.name}: {pair} go together; '
          f'{model_class.name} takes {", ".join(takes)}'
        )
    if self.stretch == 'rhythm' and not model_class.takes_content_mel:
      raise ConfigError(
        f'--config.trainer={self.name!r} feeds a rhythm path that {model_class.name} '
        f'does not have: the rhythm trainers and the rhythm models (vqvc+_rhythm, '
        f'vqvc+_multi_rhythm) go together'
      )

  def bind(self, stats_file: str | None = None) -> Normalised:
    """This trainer with its normalisation ready to use (reading the statistics it needs)."""
    normalize, denormalize = NORMALISATIONS[self.normalisation].make(stats_file, self.name)
    return Normalised(self, normalize, denormalize)


@dataclasses.dataclass(frozen=True)
class Normalisation:
  """raw log-mel <-> model space; with statistics: (mel - mean) / std / stats_scale per band."""

  forward: Callable | None = None
  inverse: Callable | None = None
  stats_scale: float | None = None

  def make(self, stats_file: str | None, trainer: str) -> tuple[Callable, Callable]:
    if self.stats_scale is None:
      return self.forward, self.inverse
    mean, std = load_stats(stats_file or '', trainer)
    mean, std, scale = mean[:, None], std[:, None], self.stats_scale  # per band, over frames
    return (lambda m: (m - mean) / std / scale), (lambda m: m * std * scale + mean)


NORMALISATIONS = {
  'none': Normalisation(lambda mel: mel, lambda mel: mel),
  # x / 2 + 1, written as the original does: (x * 25 + 50) / 50.
  'simple': Normalisation(lambda m: (m * 25 + 50) / 50, lambda m: (m * 50 - 50) / 25),
  'mean_std': Normalisation(stats_scale=3.0),
  # train_multi.py: the original's VCTK mean/std (no / 3), from our statistics file.
  'mean_std_unscaled': Normalisation(stats_scale=1.0),
}

TRAINERS = {
  t.name: t
  for t in (
    Trainer('normal', 'train.py', 'none', 'none', multi_scale=False),
    Trainer('mean_std', 'train_mean_std.py', 'mean_std', 'none', multi_scale=False),
    Trainer('simple_normalize', 'train_simple_normalize.py', 'simple', 'none', multi_scale=False),
    Trainer('rhythm', 'train_rhythm.py', 'none', 'rhythm', multi_scale=False),
    Trainer('multi', 'train_multi.py', 'mean_std_unscaled', 'input', multi_scale=True),
    Trainer('simple_normalize_multi', 'train_simple_normalize_multi.py', 'simple', 'input', True),
    Trainer(
      'simple_normalize_multi_rhythm',
      'train_simple_normalize_multi_rhythm.py',
      'simple',
      'rhythm',
      multi_scale=True,
    ),
    Trainer('pitch_multi', 'train_pitch_multi.py', 'simple', 'none', multi_scale=True, f0=True),
    # train_time_multi.py: train_multi's step (per-band mean/std, the stretch, three scales) on the
    # speaker-free models. The original also encodes a batch of another corpus (VCTK) after the loss
    # and discards the outputs: its only effect is the in-place renormalisation of the codebook rows
    # those frames pick in a max-norm model (vqvc+_lj3), which this row does not reproduce.
    Trainer(
      'time_multi', 'train_time_multi.py', 'mean_std_unscaled', 'input', True, speaker_free=True
    ),
    # LJSpeech.ipynb's fine-tuning of a trained LJ model's decoder (with `trainable='dec'`): simple
    # normalisation, segments stretched by 0.8-1.2 (lengths rounded to 32 frames here, to 16 there),
    # L1 at the three scales + 0.01 x the latent loss (`latent_loss_weight`), no critic.
    Trainer(
      'lj_finetune',
      'LJSpeech.ipynb',
      'simple',
      'input',
      multi_scale=True,
      speaker_free=True,
      stretch_range=(0.8, 1.2),
    ),
    Trainer(
      'ljvae',
      'train_ljvae.py',
      'simple',
      'input',
      multi_scale=True,
      speaker_free=True,
      adversary='began',
    ),
  )
}
NAMES = tuple(TRAINERS)


def latent_key(rng):
  """The key of a step's training-only latent terms (kept apart from the model's own noise)."""
  return jax.random.fold_in(rng, 1)


def scale_l1(outputs: list, target):
  """Sum over the decoder's scales of mean |output - target|, coarsest first: a scale at 1/f of the
  frame rate is scored against the lowest 1/f of the bands at every f-th frame (the original's
  nearest x1/2 interpolation, then keeping the lower half of the bands, once per scale). A
  single-scale model's one output is scored against the whole target. Returns (sum, per scale)."""
  losses = []
  for j, out in enumerate(outputs):
    f = 2 ** (len(outputs) - 1 - j)
    scaled = target[:, : target.shape[1] // f, ::f]
    losses.append(jnp.mean(jnp.abs(out.astype(jnp.float32) - scaled)))
  return sum(losses), losses


# Trainers made for one kind of model, and only it: (trainer field, model attribute, who goes together).
_PAIRED = (
  ('speaker_free', 'speaker_free', 'the speaker-free (any-to-one) models and their trainer'),
  ('f0', 'takes_f0', 'the F0 trainer and the F0 model (vqvc+_pitch)'),
)


@dataclasses.dataclass(frozen=True)
class Normalised:
  """A trainer with its normalisation bound: what training, conversion and samples call."""

  spec: Trainer
  normalize: Callable  # raw log-mel -> model space; works on numpy and jax arrays
  denormalize: Callable  # model space -> raw log-mel (for vocoders and images)

  @property
  def name(self) -> str:
    return self.spec.name

  @property
  def stretch(self) -> str:
    return self.spec.stretch

  @property
  def uses_stats(self) -> bool:
    return self.spec.uses_stats

  def denormalize_bands(self, mel, n_mels: int) -> jax.Array:
    """Raw log-mel of the lowest mel.shape[0] of n_mels bands (a multi-scale model's coarser
    outputs), with those bands' statistics; numpy or jax input, and jittable (conversion runs it
    inside its decode program)."""
    full = jnp.zeros((n_mels, mel.shape[-1]), jnp.float32).at[: mel.shape[0]].set(mel)
    return self.denormalize(full)[: mel.shape[0]]

  def augment(self, mel: np.ndarray, rng: np.random.Generator, f0_hz=None) -> dict:
    """Host-side: a batch of raw mels (and their F0 in Hz) -> the step's inputs (`mel`, plus
    `content_mel` for rhythm, `f0` for the F0 trainer)."""
    if self.stretch == 'none':
      return dict(mel=mel) if f0_hz is None else dict(mel=mel, f0=f0_hz)
    stretch, resize = stretch_indices(mel.shape[-1], rng, *self.spec.stretch_range)
    if self.stretch == 'input':  # the stretched copy alone: no target to gather
      return dict(mel=mel[..., stretch])
    return dict(mel=mel[..., resize], content_mel=mel[..., stretch])

  def reconstruct(self, model, inputs: dict, rng, content_resize: float = 0.0):
    """The model's reconstruction of normalised inputs['mel'] (every scale), and its encoding; an
    F0 model's decoder takes inputs['f0'] (Hz) as train_pitch_multi.py makes it. With
    content_resize > 0, the content comes from a copy resized along frequency (`resized_reconstruction`)."""
    content_mel, f0_hz = inputs.get('content_mel'), inputs.get('f0')
    mel = self.normalize(inputs['mel'])
    contour = None if f0_hz is None else f0.model_contour(f0_hz)
    if content_resize:
      return resized_reconstruction(model, mel, contour, rng, content_resize)
    return model.reconstruct(
      mel,
      None if content_mel is None else self.normalize(content_mel),
      f0=contour,
      rng=rng,
    )

  def loss(
    self,
    model,
    inputs: dict,
    rng,
    latent_weight: float,
    content_resize: float = 0.0,
    prediction_weight: float = 0.0,
  ):
    """L1 at every scale + latent_weight * latent loss, in normalised space (as the original);
    with a content predictor (`predict_steps`), + prediction_weight * its contrastive loss.

    aux: the two terms, the codes, the per-scale L1 terms and the codebooks after a max_norm
    lookup's renormalisation, which the step writes back (`renormed_codebooks`)."""
    recon, enc = self.reconstruct(model, inputs, rng, content_resize)
    recon_loss, recon_losses = scale_l1(recon, self.normalize(inputs['mel']))
    latent_loss = enc.latent_loss + model.training_latent(enc, latent_key(rng))
    aux = dict(recon_losses=recon_losses)
    if enc.extras and 'renormed_codebooks' in enc.extras:
      aux['renormed_codebooks'] = enc.extras['renormed_codebooks']
    latent_loss = jnp.asarray(latent_loss, jnp.float32)
    loss = recon_loss + latent_weight * latent_loss
    if prediction_weight and getattr(model, 'predict_steps', 0):  # not at evaluation (weight 0)
      aux['prediction_loss'] = model.content_prediction_loss(enc)
      loss = loss + prediction_weight * aux['prediction_loss']
    return loss, dict(
      aux,
      recon_loss=recon_loss,
      latent_loss=latent_loss,
      codes=enc.codes,
      quantizer_in=enc.quantizer_in,
    )


# ---- the spectrogram-resize augmentation ----------------------------------------------------------

_RESIZE_STREAM = 2  # folded into a step's key for the resize ratios (1: the latent terms)


def resize_bands(mel, ratios):
  """Each mel (B, bands, T) with its frequency axis scaled by its ratio: band k of the result is
  band k / ratio of the mel, linearly interpolated (above 1 the spectrum moves up and its top is
  lost; below 1 it moves down and the bands it leaves empty at the top take the item's lowest
  value)."""
  bands = mel.shape[1]
  source = jnp.arange(bands, dtype=jnp.float32)[None] / ratios[:, None]  # (B, bands)
  low = jnp.clip(jnp.floor(source), 0, bands - 1).astype(jnp.int32)
  high = jnp.minimum(low + 1, bands - 1)
  weight = jnp.clip(source - low, 0.0, 1.0)[..., None].astype(mel.dtype)
  rows = jax.vmap(lambda m, i: m[i])
  resized = rows(mel, low) * (1 - weight) + rows(mel, high) * weight
  floor = jnp.min(mel, axis=(1, 2), keepdims=True)
  # Half a band past the top still takes the top band (its nearest), so a ratio of 1 is exact.
  return jnp.where((source > bands - 0.5)[..., None], floor, resized)


def resized_reconstruction(model, mel, contour, rng, spread: float):
  """FreeVC's spectrogram-resize augmentation: the content comes from a copy of each mel resized
  along frequency by a ratio ~ U(1 - spread, 1 + spread), the speaker terms from the mel itself, and
  the decoder reconstructs the mel; content that survives a moved spectrum carries less of the
  speaker. Both copies go through the encoder as one batch (the latent loss and codes cover both;
  a max_norm codebook renormalises the rows either looks up). Conversion is unchanged."""
  ratio_key, encode_key, decode_key = jax.random.split(jax.random.fold_in(rng, _RESIZE_STREAM), 3)
  batch = mel.shape[0]
  ratios = jax.random.uniform(ratio_key, (batch,), minval=1 - spread, maxval=1 + spread)
  enc = model.encode(jnp.concatenate([resize_bands(mel, ratios), mel]), rng=encode_key)
  resized, own = (lambda xs: [x[:batch] for x in xs]), (lambda xs: [x[batch:] for x in xs])
  recon = model.decode(
    resized(enc.content), own(enc.speaker), own(enc.std), f0=contour, rng=decode_key
  )
  return recon, enc


def load_stats(path: str, trainer: str = 'mean_std') -> tuple[np.ndarray, np.ndarray]:
  if not storage.isfile(path):
    raise CorpusError(
      f'the {trainer} trainer needs per-band statistics: {path} not found; '
      f'skipvqvc-preprocess writes it, or set --config.data.stats_file'
    )
  try:
    with np.load(io.BytesIO(storage.read_bytes(path))) as stats:
      mean, std = stats['mean'].astype(np.float32), stats['std'].astype(np.float32)
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
    raise CorpusError(
      f'{path}: cannot read these statistics ({type(e).__name__}: {e}); copy back the stats.npz '
      f'of the feature folder the run was trained on (skipvqvc-preprocess wrote it there)'
    ) from None
  if mean.ndim != 1 or mean.shape != std.shape:
    raise CorpusError(f'{path}: mean and std must be 1-D arrays of one size')
  if not (np.isfinite(mean).all() and np.isfinite(std).all()):
    raise CorpusError(f'{path}: the statistics are not finite (NaN or inf); make them again')
  return mean, np.maximum(std, 1e-5)


def spec(name: str) -> Trainer:
  """The table's row of trainer `name`."""
  if name not in TRAINERS:
    raise ConfigError(f'unknown trainer {name!r}; valid trainers: {", ".join(TRAINERS)}')
  return TRAINERS[name]


def get(name: str, stats_file: str | None = None) -> Normalised:
  """Trainer `name`, bound to its normalisation (`mean_std` and `multi` read stats_file)."""
  return spec(name).bind(stats_file)


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
  stretch, resize = stretch_indices(mel.shape[-1], rng, low, high)
  return mel[..., resize], mel[..., stretch]


def stretch_indices(frames: int, rng: np.random.Generator, low: float = 0.5, high: float = 2.0):
  """`rhythm_stretch`'s frame indices: (the stretched copy's, the resized target's), each of the
  stretched length; the host's share of a stretching trainer's step, so built without Python loops."""
  segments = frames // RHYTHM_SEGMENT
  factors = rng.uniform(low, high, segments)
  raw = np.floor(RHYTHM_SEGMENT * factors)
  length = max(2 * RHYTHM_BUCKET, int(round(raw.sum() / RHYTHM_BUCKET)) * RHYTHM_BUCKET)
  # Segment boundaries in the output, scaled so the segments fill exactly `length` frames.
  bounds = np.round(np.concatenate([[0], np.cumsum(raw)]) * length / raw.sum()).astype(int)
  position = np.arange(bounds[-1])
  segment = np.searchsorted(bounds, position, side='right') - 1  # an empty segment owns no frame
  width = np.maximum(bounds[segment + 1] - bounds[segment], 1)
  within = np.floor((position - bounds[segment]) * RHYTHM_SEGMENT / width).astype(int)
  stretch = RHYTHM_SEGMENT * segment + np.minimum(within, RHYTHM_SEGMENT - 1)
  # Nearest resize of the whole (segment-covered) input to `length` frames: the target.
  resize = np.floor(np.arange(length) * (segments * RHYTHM_SEGMENT) / length).astype(int)
  return stretch, resize
