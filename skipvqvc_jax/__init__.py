"""skipvqvc_jax: one-shot voice conversion with VQVC+ in JAX/Flax.

    import skipvqvc_jax
    converter = skipvqvc_jax.load('models/vqvc+')      # a model directory or a training workdir
    wave = converter.convert('source.wav', ['ref1.wav', 'ref2.wav'])  # samples at converter.sample_rate

Importing the package is cheap (preprocessing's workers import parts of it): `load` and `Converter`
bring in JAX and the models when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
  from skipvqvc_jax.inference.convert import Codes, Converter, Speaker

__version__ = '0.2.0'
__all__ = [
  'Codes',
  'Converter',
  'Speaker',
  'load',
  'plot_mels',
  'random_pair',
  'world',
  '__version__',
]

# The package's wings (sub-packages), bottom up: a module imports only from its own wing and the
# wings before it. tests/test_architecture.py holds the code to this order; ARCHITECTURE.md says what
# each wing holds. A new module goes into the wing of its job, with no table to edit.
WINGS = (
  'core',
  'data',
  'models',
  'configs',
  'store',
  'vocoders',
  'training',
  'inference',
  'evaluation',
  'apps',
)


def load(path: str, step: int | None = None, vocoder: str = 'griffin_lim') -> Converter:
  """The converter of a model directory (`skipvqvc-port` writes one) or a training workdir.

  Args:
    path: the model directory or workdir (a local path or a URL such as gs://...).
    step: a workdir's checkpoint step (default: its latest intact one).
    vocoder: 'griffin_lim', 'melgan' (the original's pretrained MelGAN, fetched once into the
      user's cache), or a vocoder's workdir or model directory.

  Raises:
    skipvqvc_jax.core.errors.UserError (a ConversionError) naming the path and what to do, when the path
    holds no usable model.
  """
  from skipvqvc_jax.inference import convert  # pylint: disable=import-outside-toplevel

  return convert.Converter.restore(path, step, vocoder)


def random_pair(features_dir: str, seed: int | None = None) -> tuple[str, str]:
  """A (source, target) pair of `.npy` features of two different speakers of a feature folder, drawn
  with `seed`; `converter.convert(source, target)` takes them as they are."""
  from skipvqvc_jax.data import feature_files  # pylint: disable=import-outside-toplevel

  return feature_files.random_pair(features_dir, seed)


def plot_mels(named: dict, title: str = '', path: str | None = None):
  """One picture (RGB array; PNG at `path`) of the log-mels in `named`, e.g. {'source': mel,
  'reconstruction': converter.reconstruct_mel(mel)[0]} with mel = converter.mel('a.wav')."""
  from skipvqvc_jax.evaluation import pictures  # pylint: disable=import-outside-toplevel

  return pictures.mels(named, title, path)


def __getattr__(name: str):
  if name in ('Codes', 'Converter', 'Speaker'):
    from skipvqvc_jax.inference import convert  # pylint: disable=import-outside-toplevel

    return getattr(convert, name)
  if name == 'world':  # WORLD analysis and resynthesis: skipvqvc_jax.world.analyse(wave, sr)
    from skipvqvc_jax.evaluation import world  # pylint: disable=import-outside-toplevel

    return world
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
