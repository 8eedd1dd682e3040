"""Port a checkpoint into a model directory that converts, or export one (skipvqvc-port).

    skipvqvc-port --checkpoint=checkpoint/vqvc+_n64_ch64_train_normal/gen --output=models/vqvc+  # the original's
    skipvqvc-port --checkpoint=multi_speaker.pt --output=models/melgan --architecture=melgan  # its MelGAN
    skipvqvc-port --checkpoint=runs/MY_RUN --output=models/my_run                       # a run of ours
    skipvqvc-port --checkpoint=runs/MY_RUN --output=my_run.pt  # ours -> the original's state dict

A model directory holds the parameters and what conversion needs (the trainer's normalisation, its
statistics, the feature parameters): `skipvqvc-convert --model=DIR`, `skipvqvc_jax.load(DIR)` and
`skipvqvc-demo --model=DIR` take it. The original saved checkpoints as
checkpoint/{model}_n{n_embed}_ch{channel}_train_{trainer}/gen: the model and trainer are read from that path
when it has that form; otherwise give --architecture and --trainer (the original's -m and -t). `.pt` files are
read and written without torch.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags, logging

from skipvqvc_jax import models
from skipvqvc_jax.apps.usage import old_spelling, one_line_errors, run_program
from skipvqvc_jax.core.errors import PortError
from skipvqvc_jax.inference import model_dirs
from skipvqvc_jax.training import trainers


def define_flags() -> None:
  """Defines this program's flags: called by run(), not at import, so that importing two programs
  in one process (a test, a notebook) does not define a flag twice."""
  flags.DEFINE_string(
    'checkpoint',
    None,
    "What to port: the original's checkpoint (a .pt, or its save_checkpoint's `gen` file), an .npz of "
    'arrays named like one, or a training workdir / model directory of ours.',
  )
  flags.DEFINE_string(
    'output',
    None,
    'A new model directory; or, from a workdir or model directory, a .pt or .npz file: the '
    "original's state dict (a vocoder: melgan-neurips' names).",
  )
  flags.DEFINE_enum(
    'architecture',
    None,
    models.names('voice_conversion') + models.names('vocoder'),
    "The original's model (-m); default: read from the checkpoint's path.",
  )
  flags.DEFINE_enum(
    'trainer',
    None,
    list(trainers.NAMES),
    "The original's trainer (-t) that trained it: its normalisation is part of the model; default: "
    "read from the checkpoint's path.",
  )
  flags.DEFINE_list(
    'stats',
    None,
    'mean_std and multi trainers: the training corpus statistics: a stats.npz (preprocess.py), or '
    "the original's MEAN.npy,STD.npy (mean.mel.melgan.npy,std.mel.melgan.npy).",
  )
  flags.DEFINE_integer('channel', None, 'VQVC+: default: read from the weights.')
  flags.DEFINE_integer('n_embed', None, 'VQVC+: default: read from the weights.')
  flags.DEFINE_enum(
    'gru_init',
    'normal',
    ['normal', 'zeros'],
    "VQVC+: the GRU's initial state: the original's N(0, 1) noise, or zeros.",
  )
  flags.DEFINE_string('prefix', '', 'Key prefix to strip in an .npz (e.g. param/).')
  flags.DEFINE_integer('step', None, 'From a workdir: the checkpoint step (default: the latest).')
  old_spelling('out', 'output')
  old_spelling('model', 'architecture')  # --model names a model directory in the other programs


FLAGS = flags.FLAGS


@one_line_errors
def main(argv) -> int:
  logging.set_verbosity(logging.WARNING)  # orbax's save log: a port prints one line, what it wrote
  if len(argv) > 1:
    raise app.UsageError(
      f'unexpected arguments: {" ".join(argv[1:])} (use --checkpoint and --output)'
    )
  if not FLAGS.checkpoint or not FLAGS.output:
    raise PortError('give --checkpoint (what to port) and --output (where to write it)')
  written = model_dirs.make(
    FLAGS.checkpoint,
    FLAGS.output,
    FLAGS.step,
    model=FLAGS.architecture,
    trainer=FLAGS.trainer,
    stats=FLAGS.stats,
    channel=FLAGS.channel,
    n_embed=FLAGS.n_embed,
    gru_init=FLAGS.gru_init,
    prefix=FLAGS.prefix,
  )
  print(json.dumps(written))
  print(next_step(written), file=sys.stderr)
  return 0


def next_step(written: dict) -> str:
  """The line a port ends with: the command that uses what it wrote."""
  out = written['out']
  if out.endswith(model_dirs.EXPORTS):
    return f'next: the original loads {out} with torch.load (its state dict)'
  if models.kind_of(written['model']) == 'vocoder':
    return (
      f'next: convert through it with skipvqvc-convert --model=VC_MODEL --source=SOURCE.wav '
      f'--target=TARGET.wav --output=OUT.wav --vocoder={out}'
    )
  return (
    f'next: convert with skipvqvc-convert --model={out} --source=SOURCE.wav --target=TARGET.wav '
    f'--output=OUT.wav (or skipvqvc_jax.load({out!r}) in Python)'
  )


def run():
  """Console script `skipvqvc-port`, and python -m skipvqvc_jax.apps.port."""
  run_program(__name__, __doc__, main, define_flags)


if __name__ == '__main__':
  run()
