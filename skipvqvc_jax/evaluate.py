"""`main.py --mode=eval`: restore a workdir's latest checkpoint and measure it on the test set."""
from __future__ import annotations

import os

import jax
from absl import logging
from flax import nnx

from skipvqvc_jax import sharding, summaries, train, trainers, vocoders


def run(workdir: str, config=None) -> dict:
  """Test metrics of the latest checkpoint, also written to TensorBoard under eval/."""
  if os.path.isfile(os.path.join(workdir, 'config.json')):
    config = train.read_workdir_config(workdir)  # the run's own settings win over flags
  elif config is None:
    raise train.TrainingError(f'{workdir} has no config.json: not a training workdir')
  data = train.Data(config.data.train_dir, config.data.test_dir, config.data.stats_file)
  stats = os.path.join(workdir, 'stats.npz')
  trainer = trainers.get(config.trainer, stats if os.path.isfile(stats) else data.stats_file)
  model = train.restore_model(workdir)
  mesh = sharding.make_mesh()
  steps = train.Steps(config, model, trainer, mesh)
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  state = dict(params=train.place(params, mesh))
  batches = train.eval_batches(config, data, trainer, sharding.local_batch_size(config.batch_size))
  metrics = train.evaluate(steps, state, batches, mesh, jax.random.key(config.seed + 2))
  step = train.latest_step(workdir)
  writer = summaries.Writer(workdir)
  writer.scalars(step, metrics, 'eval/')
  train.write_samples(writer, steps, state, train.sample_pair(data.test_dir, config.data.crop_frames),
                      vocoders.get(config.vocoder, train.feature_params(config)), step)
  writer.close()
  logging.info('step %d: %s', step, metrics)
  return metrics
