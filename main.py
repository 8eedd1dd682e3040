"""Train, evaluate or convert with a VQVC+ config.

    python main.py --config=configs/vqvc_plus.py:demo [--workdir=DIR] [--mode=train|eval]
                   [--config.num_train_steps=...]

Without --workdir the run goes to runs/{model}_n{n_embed}_ch{channel}_{trainer}, as the original names it.
"""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file('config', None, 'A config file and preset, e.g. '
                                'configs/vqvc_plus.py:n64_ch64.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Where checkpoints, TensorBoard logs and outputs go.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval'], 'What to do.')
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0, for multi-process runs.')
flags.DEFINE_integer('num_processes', None, 'Processes in a multi-process run.')
flags.DEFINE_integer('process_id', None, 'This process in a multi-process run.')
flags.mark_flags_as_required(['config'])
FLAGS = flags.FLAGS


def default_workdir(config) -> str:
  return os.path.join('runs', f'{config.model.name}_n{config.model.n_embed}_ch{config.model.channel}'
                              f'_{config.trainer}')


def _quiet_orbax(record) -> bool:
  """Orbax logs every save step at INFO; keep its warnings and errors only."""
  return record.levelno >= logging.WARNING or '/orbax/' not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.get_absl_handler().addFilter(_quiet_orbax)
  import jax  # pylint: disable=import-outside-toplevel  (after flags: XLA_FLAGS may be set by then)
  config = FLAGS.config
  if FLAGS.coordinator_address or config.distributed:
    # Collectives between CPU processes (tests, CPU clusters); accelerators use their own.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  from skipvqvc_jax import corpus, train  # pylint: disable=import-outside-toplevel
  workdir = FLAGS.workdir or default_workdir(config)
  logging.info('JAX process %d/%d, devices: %s; workdir %s', jax.process_index(),
               jax.process_count(), jax.devices(), workdir)
  try:
    if FLAGS.mode == 'train':
      summary = train.train_and_evaluate(config, workdir)
      logging.info('%s at step %d', summary['status'], summary['step'])
    else:
      from skipvqvc_jax import evaluate  # pylint: disable=import-outside-toplevel
      metrics = evaluate.run(workdir, config)
      logging.info('test metrics: %s', metrics)
  except (corpus.CorpusError, train.TrainingError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  app.run(main)
