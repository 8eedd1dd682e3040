"""One script that measures an accelerator (or this CPU): what benchmarks/README.md records per device.

    python benchmarks/accelerator.py [--out=accelerator.json] [--loop_seconds=120]
                                     [--original=CLONE_OF_SkipVQVC] [--smoke]

Prints and writes one JSON object:
- `train_step`: ms/step, steps/s, compile s and peak device memory of the jitted train step of
  `vqvc_plus.py:n64_ch64`, `vqvc_plus.py:n512_ch512`, `vqvc_plus_multi_simple.py:n64_ch64` and
  `vqvc_plus_multi_simple.py:n128_ch512` at batch 8 x 80 x 128, and the budget study's GPU twin
  `vqvc_plus_multi.py:gpu_1h` at its batch of 32, in float32 and bfloat16 (each in a
  fresh process, `benchmarks/train_step.py`);
- `host_time`: the loop's compiled program alone against the real loop (`benchmarks/host_time.py`),
  for `vqvc_plus.py:tiny` (a step so cheap that only the host shows), `vqvc_plus.py:n64_ch64` and
  `vqvc_plus_multi_simple.py:n64_ch64`, one and four steps a call, with Adam's moments as one array
  per parameter and as one vector (`flat_optimizer`): microseconds of host time per step and the
  share of the program's rate the loop keeps (`HOST_ROWS`);
- `host_parts`: the host's CPU time in each part of a step (drawing, augmenting, placing the batch,
  dispatching the program) for the tiny model and n64_ch64, per layout of the optimizer state;
- `loop`: steps/s of the real training loop (the input pipeline reading the demo corpus's features,
  logging, evaluation, checkpoints) over `--loop_seconds`, stopped by SIGTERM as a preemption would;
- `conversion`: real-time factor (processing s / audio s) of converting 10 s of speech, the model
  alone, with Griffin-Lim and with MelGAN (random weights: speed does not depend on them);
- `gru`: our scanned bidirectional GRU (the `vqvc+` decoder's) against torch's (cuDNN on a GPU), at
  channels 64 and 512, when torch is installed;
- `original`: the original PyTorch step on the same device (`benchmarks/compare_original.py`), when
  `--original` names a clone of ericwudayi/SkipVQVC and torch is installed.

Sized to fit one 10-minute command on one GPU (not yet timed on one: no device has been lent); no
network. Needs this package and its dependencies only (torch for the last two parts): on an offline machine install the wheels of `pip download -d wheels ".[cuda]"`.
`--smoke`: the tiny preset, a few steps, 10 s of loop, 2 s of audio: CI runs it on the CPU so the
script cannot rot (tests/test_benchmarks.py).
"""

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

from common import ROOT, median_seconds, preset_config, untrained_converter

HERE = os.path.dirname(os.path.abspath(__file__))
# (preset, batch) of the train-step rows.
PRESETS = (
  ('vqvc_plus.py:n64_ch64', 8),
  ('vqvc_plus.py:n512_ch512', 8),
  ('vqvc_plus_multi_simple.py:n64_ch64', 8),
  ('vqvc_plus_multi_simple.py:n128_ch512', 8),
  ('vqvc_plus_multi.py:gpu_1h', 32),  # the budget study's GPU twin: its ms/step sizes its steps
)


def _python(args, timeout, **kwargs):
  result = subprocess.run(
    [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kwargs
  )
  if result.returncode:
    raise RuntimeError(f'{" ".join(args[:2])} failed: {result.stderr[-2000:]}')
  return result.stdout


def train_steps(presets, dtypes, steps, warmup, smoke=False) -> list[dict]:
  rows = []
  for preset, batch in presets:
    for dtype in dtypes:
      if smoke:  # in this process: the time of two more interpreters saved in CI
        sys.path.insert(0, HERE)
        import train_step  # pylint: disable=import-outside-toplevel

        rows.append(
          dict(train_step.measure(preset, batch, steps, warmup, None, dtype), dtype=dtype)
        )
        continue
      out = _python(
        [
          os.path.join(HERE, 'train_step.py'),
          f'--one={preset},{batch}',
          f'--dtype={dtype}',
          f'--steps={steps}',
          f'--warmup={warmup}',
        ],
        timeout=600,
      )
      row = json.loads(out.strip().splitlines()[-1])
      rows.append(dict(row, dtype=dtype))
      print(
        f'train step {preset:38} {dtype:8} {row["ms_per_step"]:8.2f} ms '
        f'(compile {row["compile_s"]:.1f} s)',
        flush=True,
      )
  return rows


def training_loop(preset: str, seconds: float, features: str, workdir: str) -> dict:
  """The real loop for `seconds` (SIGTERM then: it saves and exits 143), from its summary."""
  run = subprocess.Popen(
    [
      sys.executable,
      'main.py',
      f'--config=configs/{preset}',
      f'--workdir={workdir}',
      f'--config.data.train_dir={features}/train',
      f'--config.data.test_dir={features}/test',
      '--config.num_train_steps=1000000',
      '--config.log_every_steps=20',
      '--config.eval_every_steps=500',
      '--config.checkpoint_every_steps=500',
    ],
    cwd=ROOT,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  lines, training = [], threading.Event()

  def read():
    for line in run.stdout:
      lines.append(line)
      if re.search(r'step \d+/\d+ \|', line):  # the loop's first log line: compiled, training
        training.set()

  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  if not training.wait(900):
    run.kill()
  start = time.monotonic()
  time.sleep(seconds)
  run.send_signal(signal.SIGTERM)
  run.wait(timeout=300)
  reader.join()
  out = ''.join(lines)
  if run.returncode != 128 + signal.SIGTERM:  # stopped by SIGTERM, after its save
    raise RuntimeError(f'the training loop failed: {out[-2000:]}')
  with open(os.path.join(workdir, 'train_summary.json')) as f:
    summary = json.load(f)
  return dict(
    preset=preset,
    seconds=round(time.monotonic() - start, 1),
    steps=summary['step'],
    steps_per_s=summary.get('steps_per_sec'),
    status=summary['status'],
  )


# (preset, steps_per_call): the smoke run takes the scan's path only (CI's time).
SMOKE_HOST_ROWS = (('vqvc_plus.py:tiny', 4),)
HOST_ROWS = (
  ('vqvc_plus.py:tiny', 1),
  ('vqvc_plus.py:tiny', 4),
  ('vqvc_plus.py:tiny+flat_optimizer=True', 1),
  ('vqvc_plus.py:tiny+flat_optimizer=True', 4),
  ('vqvc_plus.py:n64_ch64', 1),
  ('vqvc_plus.py:n64_ch64', 4),
  ('vqvc_plus_multi_simple.py:n64_ch64', 1),
  ('vqvc_plus_multi_simple.py:n64_ch64+flat_optimizer=True', 1),
)
HOST_PART_PRESETS = tuple(
  preset + flat
  for preset in ('vqvc_plus.py:tiny', 'vqvc_plus.py:n64_ch64')
  for flat in ('', '+flat_optimizer=True')
)


def host_times(features: str, smoke: bool) -> list[dict]:
  sys.path.insert(0, HERE)
  import host_time  # pylint: disable=import-outside-toplevel

  rows = []
  for preset, k in SMOKE_HOST_ROWS if smoke else HOST_ROWS:
    rows.append(host_time.measure(preset, features, k, 2.0 if smoke else 20.0))
    print(f'host time: {rows[-1]}', flush=True)
  return rows


def host_parts(features: str, smoke: bool) -> list[dict]:
  """The host's CPU time in each part of a step (host_time.py --parts), per layout of the optimizer
  state: what handing the state's arrays over costs where the step itself is cheap."""
  sys.path.insert(0, HERE)
  import host_time  # pylint: disable=import-outside-toplevel

  rows = []
  for preset in ('vqvc_plus.py:tiny+flat_optimizer=True',) if smoke else HOST_PART_PRESETS:
    parts = host_time.host_parts(host_time._config(preset, features, 1), 20 if smoke else 500)
    rows.append(dict(preset=preset, **{f'{part}_us': us for part, us in parts.items()}))
    print(f'host parts: {rows[-1]}', flush=True)
  return rows


def conversion(preset: str, seconds: float, repeat: int) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from skipvqvc_jax import vocoders
  from skipvqvc_jax.data import audio  # pylint: disable=import-outside-toplevel
  from skipvqvc_jax.models import melgan  # pylint: disable=import-outside-toplevel

  params = audio.FeatureParams()
  demo = os.path.join(ROOT, 'data', 'demo_corpus', 'awb')
  wave = np.concatenate(
    [audio.trim(audio.load(os.path.join(demo, f)))[0] for f in sorted(os.listdir(demo))[:12]]
  )[: int(seconds * params.sample_rate)]
  mel = audio.log_mel(wave, params)
  audio_s = len(wave) / params.sample_rate
  converter = untrained_converter(preset_config(preset))
  reference = converter.speaker([mel[:, :256]])
  median = lambda fn: median_seconds(fn, repeat)

  model_s = median(lambda: np.asarray(converter.convert_mel(mel, reference)))
  griffin_lim = vocoders.get('griffin_lim', params)
  melgan_vocoder = vocoders.NeuralVocoder(melgan.MelGANGenerator())
  gl_s = median(lambda: griffin_lim(mel))
  melgan_s = median(lambda: melgan_vocoder(mel))
  # MelGAN's convolutions at full float32 precision (what the CPU uses, for parity) against the
  # backend's default, side by side: the speed and the largest difference of the audio.
  default_wave = np.asarray(melgan_vocoder(mel))
  backend_default = melgan._precision  # pylint: disable=protected-access
  melgan._precision = lambda: jax.lax.Precision.HIGHEST  # pylint: disable=protected-access
  try:
    highest = vocoders.NeuralVocoder(melgan.MelGANGenerator())  # retraced at the new precision
    highest_s = median(lambda: highest(mel))
    highest_wave = np.asarray(highest(mel))
  finally:
    melgan._precision = backend_default  # pylint: disable=protected-access
  return dict(
    preset=preset,
    audio_s=round(audio_s, 2),
    rtf_model=model_s / audio_s,
    rtf_with_griffin_lim=(model_s + gl_s) / audio_s,
    rtf_with_melgan=(model_s + melgan_s) / audio_s,
    melgan_highest_over_default_time=highest_s / melgan_s,
    melgan_highest_vs_default_max_abs=float(np.abs(highest_wave - default_wave).max()),
  )


def gru(channels, frames: int, repeat: int) -> list[dict] | None:
  """Our bidirectional GRU (scan) forward + backward against torch's nn.GRU on the same device."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  sys.path.insert(0, HERE)
  import gru as ours_gru  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  rng = np.random.default_rng(0)
  rows = []
  for channel in channels:
    params = tuple(
      jnp.asarray(rng.normal(0, 0.1, shape), jnp.float32)
      for shape in ((2, channel, 3 * channel),) * 2 + ((2, 3 * channel),) * 2
    )
    x = jnp.asarray(rng.normal(0, 1, (8, frames, channel)), jnp.float32)
    loss = lambda p, x: jnp.sum(ours_gru.ours(x, p) ** 2)
    ours = ours_gru.timed(jax.jit(jax.grad(loss)), params, x, repeat=repeat)
    # The same GRU in torch: hidden size = channels, both directions (cuDNN's kernel on a GPU).
    layer = torch.nn.GRU(channel, channel, batch_first=True, bidirectional=True).to(device)
    tx = torch.randn(8, frames, channel, device=device, requires_grad=True)

    def step():
      out, _ = layer(tx)
      (out**2).sum().backward()
      if device == 'cuda':
        torch.cuda.synchronize()

    theirs = median_seconds(step, repeat)
    rows.append(
      dict(
        channel=channel,
        frames=frames,
        ours_ms=ours * 1e3,
        torch_ms=theirs * 1e3,
        torch_backend='cudnn' if device == 'cuda' else 'cpu',
        ours_over_torch=ours / theirs,
        jax_device=str(jax.devices()[0]),
      )
    )
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', default='accelerator.json')
  parser.add_argument('--loop_seconds', type=float, default=120.0)
  parser.add_argument('--original', default=None, help='a clone of ericwudayi/SkipVQVC')
  parser.add_argument('--smoke', action='store_true', help='a few seconds of everything (CI)')
  parser.add_argument(
    '--features', default=None, help='a preprocessed folder for the loop (default: the demo corpus)'
  )
  parser.add_argument('--part', help=argparse.SUPPRESS)  # internal: conversion / gru, in a process
  args = parser.parse_args()
  if args.part:
    kind, *rest = args.part.split(',')
    if kind == 'conversion':
      print(json.dumps(conversion(rest[0], float(rest[1]), int(rest[2]))))
    else:
      print(json.dumps(gru([int(c) for c in rest[:-2]], int(rest[-2]), int(rest[-1]))))
    return

  import jax  # pylint: disable=import-outside-toplevel

  device = jax.devices()[0]
  presets = (('vqvc_plus.py:tiny', 8),) if args.smoke else PRESETS
  steps, warmup = (2, 1) if args.smoke else (20, 3)
  started = time.monotonic()
  report = dict(
    device=f'{jax.device_count()}x {device.device_kind} ({device.platform})',
    jax=jax.__version__,
    python=platform.python_version(),
    smoke=args.smoke,
    date=time.strftime('%Y-%m-%d'),
  )
  report['train_step'] = train_steps(presets, ('float32', 'bfloat16'), steps, warmup, args.smoke)

  with tempfile.TemporaryDirectory() as tmp:
    features = args.features or os.path.join(tmp, 'features')
    if not args.features:
      corpus = os.path.join(ROOT, 'data', 'demo_corpus')
      _python(['preprocess.py', corpus, features, '--num_test_speakers=1'], timeout=900)
    report['host_time'] = host_times(features, args.smoke)
    report['host_parts'] = host_parts(features, args.smoke)
    report['loop'] = training_loop(
      presets[0][0] if args.smoke else 'vqvc_plus.py:n64_ch64',
      10.0 if args.smoke else args.loop_seconds,
      features,
      os.path.join(tmp, 'run'),
    )
  print(f'loop: {report["loop"]}', flush=True)

  # Each part in a process of its own (its peak memory its own); the smoke run in this one (time).
  part = f'conversion,{presets[0][0]},{2.0 if args.smoke else 10.0},{1 if args.smoke else 5}'
  report['conversion'] = (
    conversion(presets[0][0], 2.0, 1)
    if args.smoke
    else json.loads(_python([__file__, f'--part={part}'], timeout=600).strip().splitlines()[-1])
  )
  print(f'conversion: {report["conversion"]}', flush=True)
  report['gru'] = (
    gru([16], 16, 2)
    if args.smoke
    else json.loads(
      _python([__file__, '--part=gru,64,512,128,10'], timeout=600).strip().splitlines()[-1]
    )
  )
  print(f'gru: {report["gru"]}', flush=True)
  if args.original:
    report['original'] = _python(
      [os.path.join(HERE, 'compare_original.py'), f'--original={args.original}'], timeout=900
    )
  report['total_s'] = round(time.monotonic() - started, 1)
  with open(args.out, 'w') as f:
    json.dump(report, f, indent=1)
  print(json.dumps(report, indent=1))


if __name__ == '__main__':
  main()
