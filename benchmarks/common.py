"""What the benchmark scripts share: the repository on the import path, one timing rule, and a
preset's config and untrained converter (conversion's cost does not depend on training)."""

from __future__ import annotations

import ast
import importlib
import json
import os
import statistics
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
DEMO = os.path.join(ROOT, 'data', 'demo_corpus')
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)


def median_seconds(fn, repeat: int, warmup: int = 1) -> float:
  """The median wall time of `repeat` calls of `fn`, after `warmup` calls (compiling, caches). `fn`
  must wait for its own result (np.asarray, jax.block_until_ready): JAX's calls return early."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeat):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def preset_config(preset: str):
  """The config of `FILE.py:PRESET` (e.g. vqvc_plus.py:n64_ch64), from the package's presets, with
  any `+field=value` after it set (`vqvc_plus_multi.py:cpu_25min+model.speaker_scale=True`)."""
  preset, *overrides = preset.split('+')
  module, name = preset.split(':')
  configs = importlib.import_module('skipvqvc_jax.configs.' + module.removesuffix('.py'))
  config = configs.get_config(name)
  for override in overrides:
    field, value = override.split('=', 1)
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass  # a string
    config.update_from_flattened_dict({field: value})
  return config


def untrained_converter(config):
  """A converter of `config`'s model at its seeded initialisation, normalising as `normal` does."""
  from skipvqvc_jax.inference import convert  # pylint: disable=import-outside-toplevel
  from skipvqvc_jax.training import trainers  # pylint: disable=import-outside-toplevel
  from skipvqvc_jax.training.tasks import voice_conversion  # pylint: disable=import-outside-toplevel

  return convert.Converter(
    voice_conversion.build_model(config),
    convert.Settings.from_config(config),
    trainers.get('normal'),
  )


def write_rows(path: str | None, rows: list) -> None:
  """The measured rows as JSON at `path` (--out), when given."""
  if path:
    with open(path, 'w') as f:
      json.dump(rows, f, indent=1)
