"""Vocoders behind one interface: `vocoder(log_mel) -> waveform`, with a `sample_rate` attribute.

Neural vocoders come in families (`FAMILIES`): a generator registered in `models` (kind `vocoder`), the
fields of a vocoder config's `generator` section its spec takes, and the names of its published
weights (`store.published.PUBLISHED`). A second family is a row there and its generator's model.

`get('griffin_lim')` is the built-in default; `get('melgan')` the original's pretrained MelGAN
(fetched into the user's cache on first use: `fetch`); `get(PATH)` loads a MelGAN generator: the
latest checkpoint of a vocoder training workdir (`main.py --config=configs/vocoder.py:melgan`), or a
model directory (ported: `skipvqvc-port --checkpoint=GENERATOR.pt --output=PATH --architecture=melgan`).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from flax import nnx

from skipvqvc_jax.core.errors import CheckpointError, ConfigError
from skipvqvc_jax.data import audio
from skipvqvc_jax.models import MelGANGenerator
from skipvqvc_jax.store import checkpoints, published
from skipvqvc_jax.vocoders.griffin_lim import GriffinLim
from skipvqvc_jax.vocoders.windows import vocode_in_windows


@dataclasses.dataclass(frozen=True)
class Family:
  """A family of neural vocoders (see the module's docstring)."""

  model: str  # the generator's name in the model registry
  spec_fields: tuple[
    str, ...
  ]  # the `generator` config fields its spec takes (n_mels: the features')
  published: tuple[str, ...] = ()  # store.published.PUBLISHED names of its released weights


FAMILIES = {'melgan': Family('melgan', ('ngf', 'residual_layers'), published=('melgan',))}


def family_of(config) -> Family:
  """The family a vocoder config trains (`generator.family`, MelGAN's when absent); a ConfigError
  names the families there are."""
  name = config.generator.get('family', 'melgan')
  if name not in FAMILIES:
    raise ConfigError(f'--config.generator.family={name!r}: use {" or ".join(FAMILIES)}')
  return FAMILIES[name]


def generator_spec(config) -> dict:
  """The spec (`models.build` arguments) of the generator a vocoder config trains."""
  family = family_of(config)
  fields = {name: config.generator[name] for name in family.spec_fields}
  return dict(name=family.model, n_mels=config.features.n_mels, **fields)


class NeuralVocoder:
  """A MelGAN generator as a vocoder: raw log10 mels (n_mels, T) or (B, n_mels, T) -> waveforms."""

  def __init__(
    self, generator: MelGANGenerator, params: audio.FeatureParams = audio.FeatureParams()
  ):
    if generator.hop_length != params.hop_length or generator.n_mels != params.n_mels:
      raise ConfigError(
        f'the vocoder expects {generator.n_mels} mels at hop {generator.hop_length}, '
        f'the features have {params.n_mels} at hop {params.hop_length}'
      )
    self.name = generator.name
    self.sample_rate, self.hop_length = params.sample_rate, params.hop_length
    graphdef, state = nnx.split(generator)
    self._state = state
    self._run = jax.jit(lambda s, mel: nnx.merge(graphdef, s)(mel))

  def __call__(self, log_mel) -> np.ndarray:
    """One mel (n_mels, T) -> T * hop samples (a long one in overlapping windows); or a batch."""
    log_mel = np.asarray(log_mel, np.float32)
    run = lambda mels: np.asarray(self._run(self._state, mels))
    if log_mel.ndim == 2:
      return vocode_in_windows(run, log_mel, self.hop_length)
    return run(log_mel)


def load_generator(path: str) -> MelGANGenerator:
  """A MelGAN generator from a model directory (ported) or a vocoder training workdir."""
  info = checkpoints.read_model_info(path)
  if info.kind != 'vocoder':
    raise ConfigError(f'{path} holds a {info.spec["name"]} model, not a MelGAN generator')
  return checkpoints.load(path)


def get(name: str = 'griffin_lim', params: audio.FeatureParams = audio.FeatureParams()):
  """The vocoder named by a config or flag: 'griffin_lim' or a saved vocoder directory."""
  if name == 'griffin_lim':
    return GriffinLim(params)
  released = {n for family in FAMILIES.values() for n in family.published}
  if name in released and not (checkpoints.is_model_dir(name) or checkpoints.is_workdir(name)):
    name = published.fetch(name)  # (a folder of that name here wins: ./melgan is the user's own)
  if checkpoints.is_model_dir(name) or checkpoints.is_workdir(name):
    try:
      return NeuralVocoder(load_generator(name), params)
    except CheckpointError as e:  # a workdir with no (or not that) checkpoint
      raise ConfigError(f'vocoder {name}: {e}') from None
  raise ConfigError(
    f"unknown vocoder {name!r}: use griffin_lim, melgan (the original's, fetched once), a vocoder "
    f'training workdir (configs/vocoder.py) or a ported one (skipvqvc-port '
    f'--checkpoint=GENERATOR.pt --output=DIR --architecture=melgan)'
  )
