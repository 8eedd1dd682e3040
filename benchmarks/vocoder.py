"""Vocoder speed on this machine: real-time factor of the MelGAN generator (and of Griffin-Lim) for
10 s of audio, and training steps per second of the configs/vocoder.py presets.

    python benchmarks/vocoder.py [--vocoder=DIR] [--seconds=10] [--repeat=5]
        [--train_presets=demo,demo_hifigan_style,melgan,hifigan_style] [--train_steps=5]
    python benchmarks/vocoder.py --compare_convolutions

Without --vocoder the generator has random weights (speed does not depend on them).
RTF = processing seconds / audio seconds; the issue's goal is <= 0.1 on 2 CPU cores.
Training: one jitted step (discriminators then generator) on random audio of the preset's batch and
segment length, median over --train_steps after one compiling step.
--compare_convolutions: our transposed / strided / grouped convolutions against XLA's
`lax.conv_general_dilated` (forward, weight gradient, input gradient per layer; the generator's forward +
backward and the `demo` train step with each).
"""

import argparse
import contextlib
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from skipvqvc_jax import vocoders
from skipvqvc_jax.configs import vocoder as vocoder_configs  # pylint: disable=wrong-import-position
from skipvqvc_jax.data import audio  # pylint: disable=wrong-import-position
from skipvqvc_jax.models import melgan  # pylint: disable=wrong-import-position
from skipvqvc_jax.store import checkpoints
from skipvqvc_jax.training import sharding
from skipvqvc_jax.training.tasks import vocoder as training  # pylint: disable=wrong-import-position


def train_step_seconds(preset: str, steps: int) -> tuple[float, int, int]:
  """(median seconds per step, batch, segment samples) of a preset's train step."""
  config = vocoder_configs.get_config(preset)
  mesh = sharding.make_mesh()
  generator, discriminators = (
    training.build_generator(config),
    training.build_discriminators(config),
  )
  step_fns = training.VocoderSteps(config, generator, discriminators, mesh)
  state = sharding.place(
    training.make_state(
      checkpoints.params_of(generator), checkpoints.params_of(discriminators), step_fns.tx
    ),
    mesh,
  )
  segment = config.data.segment_frames * config.features.hop_length
  rng = np.random.default_rng(0)
  batch = sharding.global_batch(
    mesh, dict(audio=(rng.normal(0, 3000, (config.batch_size, 1, segment)).astype(np.float32)))
  )
  times = []
  for i in range(steps + 1):
    start = time.perf_counter()
    state, metrics = step_fns.train_step(state, batch)
    jax.block_until_ready(metrics)
    if i:
      times.append(time.perf_counter() - start)
  return statistics.median(times), config.batch_size, segment


def _median_ms(fn, *args, repeat: int = 3) -> float:
  jax.block_until_ready(fn(*args))  # compile
  times = []
  for _ in range(repeat):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times) * 1e3


def _xla_transposed(x, w, stride):
  k, p = w.shape[2], stride // 2 + stride % 2
  return jax.lax.conv_general_dilated(
    x,
    jnp.flip(w, 2).transpose(1, 0, 2),
    (1,),
    [(k - 1 - p, k - 1 - p + stride % 2)],
    lhs_dilation=(stride,),
    dimension_numbers=('NWC', 'OIW', 'NWC'),
    precision=jax.lax.Precision.HIGHEST,
  )


def _xla_strided_grouped(x, w, stride, padding, groups):
  return jax.lax.conv_general_dilated(
    x,
    w,
    (stride,),
    [(padding, padding)],
    feature_group_count=groups,
    dimension_numbers=('NWC', 'OIW', 'NWC'),
    precision=jax.lax.Precision.HIGHEST,
  )


@contextlib.contextmanager
def xla_convolutions():
  """Within: WNConv traces XLA's convolutions instead of our rewrites."""
  ours = melgan._transposed_conv, melgan._strided_grouped_conv  # pylint: disable=protected-access
  melgan._transposed_conv, melgan._strided_grouped_conv = _xla_transposed, _xla_strided_grouped
  try:
    yield
  finally:
    melgan._transposed_conv, melgan._strided_grouped_conv = ours


LAYERS = {  # name: (WNConv arguments, input shape (batch, time, channels))
  'G transposed x2, 32->16 ch, T 4096': (
    dict(in_channels=32, out_channels=16, kernel=4, stride=2, transposed=True),
    (8, 4096, 32),
  ),
  'G transposed x8, 256->128 ch, T 32': (
    dict(in_channels=256, out_channels=128, kernel=16, stride=8, transposed=True),
    (8, 32, 256),
  ),
  'D k41/4, 16->64 ch, groups 4, T 8192': (
    dict(in_channels=16, out_channels=64, kernel=41, stride=4, padding=20, groups=4),
    (16, 8192, 16),
  ),
  'D k41/4, 64->256 ch, groups 16, T 2048': (
    dict(in_channels=64, out_channels=256, kernel=41, stride=4, padding=20, groups=16),
    (16, 2048, 64),
  ),
}


def compare_convolutions(train_steps: int) -> None:
  print('convolutions, ms: forward / weight gradient / input gradient   (XLA conv -> ours)')
  for name, (kwargs, shape) in LAYERS.items():
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
    figures = []
    for context in (xla_convolutions, contextlib.nullcontext):
      with context():
        graph, params = nnx.split(melgan.WNConv(**kwargs, rngs=nnx.Rngs(0)))
        out = lambda p, x: jnp.sum(nnx.merge(graph, p)(x))
        figures.append(
          [
            _median_ms(jax.jit(f), params, x)
            for f in (out, jax.grad(out), jax.grad(out, argnums=1))
          ]
        )
    print(f'{name:40} ' + '  ->  '.join(' / '.join(f'{t:6.1f}' for t in f) for f in figures))
  generator_ms, step_ms = [], []
  for context in (xla_convolutions, contextlib.nullcontext):
    with context():
      graph, params = nnx.split(melgan.MelGANGenerator(ngf=16))
      mel = jnp.zeros((8, 80, 32))
      loss = lambda p, mel: jnp.sum(nnx.merge(graph, p)(mel))
      generator_ms.append(_median_ms(jax.jit(jax.value_and_grad(loss)), params, mel))
      step_ms.append(train_step_seconds('demo', train_steps)[0] * 1e3)
  print(
    f'{"generator ngf 16, batch 8 x 32 frames":40} forward + backward {generator_ms[0]:.1f} -> '
    f'{generator_ms[1]:.1f} ms'
  )
  print(f'{"demo train step":40} {step_ms[0]:.1f} -> {step_ms[1]:.1f} ms')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--vocoder', default=None)
  parser.add_argument('--seconds', type=float, default=10.0)
  parser.add_argument('--repeat', type=int, default=5)
  parser.add_argument('--train_presets', default='demo,demo_hifigan_style,melgan,hifigan_style')
  parser.add_argument('--train_steps', type=int, default=5)
  parser.add_argument('--compare_convolutions', action='store_true')
  args = parser.parse_args()
  if args.compare_convolutions:
    compare_convolutions(args.train_steps)
    return
  params = audio.FeatureParams()
  frames = int(args.seconds * params.sample_rate / params.hop_length)
  mel = np.random.default_rng(0).normal(-4, 1.5, (params.n_mels, frames)).astype(np.float32)
  candidates = {
    'melgan': (
      vocoders.get(args.vocoder)
      if args.vocoder
      else vocoders.NeuralVocoder(melgan.MelGANGenerator())
    ),
    'griffin_lim (32 it.)': vocoders.get('griffin_lim'),
  }
  seconds = frames * params.hop_length / params.sample_rate
  print(
    f'{seconds:.1f} s of audio ({frames} frames), {os.cpu_count()} cores, median of {args.repeat}'
  )
  for name, vocoder in candidates.items():
    vocoder(mel)  # compile
    times = []
    for _ in range(args.repeat):
      start = time.perf_counter()
      vocoder(mel)
      times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(f'{name:22} {median * 1e3:8.1f} ms  RTF {median / seconds:.4f}')
  print(
    f'training, {jax.device_count()} {jax.devices()[0].platform} device(s), '
    f'median of {args.train_steps} steps'
  )
  for preset in filter(None, args.train_presets.split(',')):
    seconds_per_step, batch, segment = train_step_seconds(preset, args.train_steps)
    print(
      f'{preset:22} {seconds_per_step * 1e3:8.1f} ms/step  {1 / seconds_per_step:6.2f} steps/s  '
      f'(batch {batch} x {segment} samples: {batch * segment / seconds_per_step / 22050:.2f} s '
      f'of audio per s)'
    )


if __name__ == '__main__':
  main()
