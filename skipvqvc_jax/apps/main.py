"""Train, evaluate or convert with VQVC+ (skipvqvc; main.py in a checkout; skipvqvc-eval and
skipvqvc-convert run one mode each).

    skipvqvc --config=configs/vqvc_plus.py:demo [--workdir=DIR]                     # train
    skipvqvc-eval --model=DIR                                                       # evaluate
    skipvqvc-convert --model=DIR --source=a.wav --target=b.wav --output=out.wav     # convert

--config=FILE.py:PRESET names a preset file and one of its presets; from another directory than the
repository, name an installed one as --config=vqvc_plus.py:PRESET. --config.FIELD=VALUE overrides a
field. Without --workdir a training run goes to runs/{model}_n{n_embed}_ch{channel}_{trainer}, the
original's naming (a vocoder: runs/vocoder_{melgan|hifigan_style}_ngf{ngf}). Evaluation reads
everything else from the workdir; conversion from --model: a training workdir or a model directory
(skipvqvc-port writes one from the original's checkpoint).
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from skipvqvc_jax import configs
from skipvqvc_jax.apps import compilation_cache
from skipvqvc_jax.apps.usage import fail, one_line_errors, run_program
from skipvqvc_jax.core import errors, storage


def define_flags() -> None:
  """Defines this program's flags: called by run(), not at import, so that importing two programs
  in one process (a test, a notebook) does not define a flag twice."""
  config_flags.DEFINE_config_file(
    'config',
    None,
    'A config file and preset, e.g. configs/vqvc_plus.py:n64_ch64 (needed to train).',
    lock_config=True,
  )
  flags.DEFINE_string('workdir', None, 'Where checkpoints, TensorBoard logs and outputs go.')
  flags.DEFINE_string(
    'model',
    None,
    'convert: the model: a training workdir or a model directory (skipvqvc-port); --workdir works too.',
  )
  flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'convert'], 'What to do.')
  flags.DEFINE_integer(
    'step', None, 'eval/convert: the checkpoint step to restore (default: latest).'
  )
  flags.DEFINE_string(
    'vocoder',
    'griffin_lim',
    "eval/convert: the vocoder that makes audio: griffin_lim, melgan (the original's pretrained "
    'MelGAN, fetched once: skipvqvc-fetch melgan), a vocoder training workdir or a ported MelGAN '
    'directory.',
  )
  flags.DEFINE_integer(
    'eval_pairs', 20, 'eval: conversions scored (seeded pairs of test speakers).'
  )
  flags.DEFINE_string(
    'eval_dir',
    None,
    "eval: test features to evaluate on instead of the run's own test speakers (results go to "
    'eval/step_N-on-FOLDER).',
  )
  flags.DEFINE_string(
    'eval_target',
    None,
    'eval: convert every pair into this test speaker (a model fine-tuned to one voice); results go '
    'to eval/step_N-to-SPEAKER.',
  )
  flags.DEFINE_integer(
    'eval_per_speaker',
    50,
    'eval: test utterances per speaker in the speaker '
    'statistics (a seeded choice; bounds the time on large test sets).',
  )
  _define_convert_flags()
  _define_cache_and_cluster_flags()


def _define_convert_flags() -> None:
  flags.DEFINE_string('source', None, 'convert: the source audio file (its words and timing).')
  flags.DEFINE_list(
    'target', None, 'convert: reference audio of the target voice; several files are averaged.'
  )
  flags.DEFINE_string('output', None, 'convert: the output wav for --source.')
  flags.DEFINE_string('pairs', None, 'convert: a CSV of source,target,output rows.')
  flags.DEFINE_string(
    'source_dir', None, 'convert: convert every audio file of this folder to --target.'
  )
  flags.DEFINE_string(
    'output_dir',
    'converted',
    "convert: where --source_dir outputs go. eval: where the report goes (default: the run's "
    "eval/ folder; a model directory's ./NAME-eval).",
  )
  flags.DEFINE_bool('output_mel', False, 'convert: write MelGAN-compatible .npy mels, not audio.')
  flags.DEFINE_bool(
    'overwrite', False, 'convert: replace outputs that exist already (refused without it).'
  )
  flags.DEFINE_float(
    'f0_shift', 0.0, "convert: semitones added to the source's melody (F0 models: vqvc+_pitch)."
  )


def _define_cache_and_cluster_flags() -> None:
  flags.DEFINE_bool(
    'compilation_cache',
    True,
    "Keep JAX's compiled programs on disk, so the next run "
    'of the same shapes starts without compiling (--nocompilation_cache: off).',
  )
  flags.DEFINE_string(
    'compilation_cache_dir',
    None,
    'Where compiled programs are kept (default: '
    '$SKIPVQVC_CACHE_DIR, else $XDG_CACHE_HOME or ~/.cache, /skipvqvc_jax/xla).',
  )
  flags.DEFINE_float(
    'compilation_cache_max_gb',
    2.0,
    'The most the compiled programs may take on disk, in GB: the least recently used are removed '
    'first (-1: no bound).',
  )
  flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0, for multi-process runs.'
  )
  flags.DEFINE_integer('num_processes', None, 'Processes in a multi-process run.')
  flags.DEFINE_integer('process_id', None, 'This process in a multi-process run.')
  flags.DEFINE_integer(
    'join_timeout',
    300,
    'Multi-process runs: seconds to wait for every process to join before giving up in one line.',
  )


FLAGS = flags.FLAGS

CONVERT_USAGE = """Convert voices with a trained model (skipvqvc-convert; main.py --mode=convert).

    skipvqvc-convert --model=DIR --source=a.wav --target=b.wav --output=out.wav
    skipvqvc-convert --model=DIR --source_dir=FOLDER --target=b.wav --output_dir=converted
    skipvqvc-convert --model=DIR --pairs=pairs.csv        # rows: source,target,output

--model is a training workdir or a model directory (skipvqvc-port writes one from the original's
checkpoint). --target takes one reference or several (comma-separated, averaged; an any-to-one model
needs none); --f0_shift moves an F0 model's melody; --vocoder=melgan uses the original's pretrained
MelGAN (fetched once) instead of Griffin-Lim.
"""

EVAL_USAGE = """Evaluate a model on unseen test speakers (skipvqvc-eval; main.py --mode=eval).

    skipvqvc-eval --model=DIR [--step=N] [--vocoder=melgan] [--eval_dir=FEATURES]
                  [--eval_target=SPEAKER]

DIR is a training workdir (its own test speakers; the report goes to DIR/eval/step_N/) or a model
directory (give --eval_dir; the report goes to ./NAME-eval/ or --output_dir). Writes metrics.json,
pairs.json and report.html (figures and audio players), and ends with the headline figures and the
report's path.
"""

# The modes that read each flag; a flag given to another mode would be ignored, so it is refused.
# Flags not listed (the compilation cache's) apply to every mode.
FLAG_MODES = {
  'config': ('train',),
  'workdir': ('train', 'eval', 'convert'),
  'model': ('eval', 'convert'),
  'output_dir': ('eval', 'convert'),
  'step': ('eval', 'convert'),
  'vocoder': ('eval', 'convert'),
  'eval_pairs': ('eval',),
  'eval_per_speaker': ('eval',),
  'eval_dir': ('eval',),
  'eval_target': ('eval',),
  **dict.fromkeys(
    (
      'source',
      'target',
      'output',
      'pairs',
      'source_dir',
      'output_mel',
      'overwrite',
      'f0_shift',
    ),
    ('convert',),
  ),
  **dict.fromkeys(
    ('coordinator_address', 'num_processes', 'process_id', 'join_timeout'), ('train',)
  ),
}
COMMON_FLAGS = ['compilation_cache', 'compilation_cache_dir', 'compilation_cache_max_gb']
PROGRAMS = {'train': 'skipvqvc', 'eval': 'skipvqvc-eval', 'convert': 'skipvqvc-convert'}
# A stopped run's exit status, after its clean save: the shell's for the signal that stopped it, so
# that `train && eval` does not go on and a supervisor (a job queue, Kubernetes) sees an unfinished
# run and starts it again (the same command resumes). Orbax's preemption notice counts as SIGTERM.
EXIT_STATUS = {'finished': 0, 'interrupted': 128 + 2, 'preempted': 128 + 15}


def check_flags_of_mode(mode: str) -> None:
  """Refuses, in one line, a flag that `mode` would ignore (e.g. --eval_pairs when training)."""
  given = [name for name in FLAG_MODES if FLAGS[name].present]
  given += [name for name in FLAGS if name.startswith('config.') and FLAGS[name].present]
  for name in given:
    modes = FLAG_MODES.get(name, ('train',))
    if mode not in modes:
      where = ' or '.join(f'--mode={m} ({PROGRAMS[m]})' for m in modes)
      raise errors.ConfigError(f'--{name} is a flag of {where}, not of --mode={mode}')


def next_steps(config, workdir: str, status: str) -> str:
  """The line a finished (or stopped) run ends with: the commands that use its workdir."""
  from skipvqvc_jax.training import tasks  # pylint: disable=import-outside-toplevel

  program = sys.argv[0]
  program = f'python {program}' if program.endswith('.py') else os.path.basename(program)
  if status in ('preempted', 'interrupted'):
    return f'to continue: run the same command again ({program} ... --workdir={workdir})'
  return tasks.next_step(config, program, workdir)


def _convert() -> None:
  model = _model_flag('convert')
  from skipvqvc_jax.inference import conversion_jobs, convert  # pylint: disable=import-outside-toplevel

  jobs = conversion_jobs.read_pairs(FLAGS.pairs) if FLAGS.pairs else []
  # No --target: only a speaker-free (any-to-one) model converts without one, said after restoring.
  targets = conversion_jobs.rejoin(FLAGS.target, ',') if FLAGS.target else []
  if FLAGS.source_dir and FLAGS.output:
    raise errors.ConversionError(
      f'--output names one file, and --source_dir converts a folder: give --output_dir=FOLDER for '
      f'its outputs instead of --output={FLAGS.output}'
    )
  if FLAGS.source_dir:
    jobs = conversion_jobs.source_dir_jobs(
      FLAGS.source_dir, targets, FLAGS.output_dir, log=lambda line: logging.info('%s', line)
    )
  elif FLAGS.source and FLAGS.output:
    jobs = [(FLAGS.source, targets, FLAGS.output)]
  elif not FLAGS.pairs:
    raise errors.ConversionError(
      'give --source, --target and --output; or --pairs=FILE.csv; or --source_dir and --target'
    )
  jobs = conversion_jobs.check(jobs, FLAGS.output_mel, FLAGS.overwrite)  # before restoring a model
  converter = convert.Converter.restore(model, FLAGS.step, FLAGS.vocoder)
  converter.convert_many(
    jobs,
    FLAGS.output_mel,
    log=lambda line: logging.info('%s', line),
    f0_shift=FLAGS.f0_shift,
    overwrite=FLAGS.overwrite,
  )


@one_line_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  check_flags_of_mode(FLAGS.mode)
  import jax  # pylint: disable=import-outside-toplevel

  compilation_cache.use(
    jax, FLAGS.compilation_cache, FLAGS.compilation_cache_dir, FLAGS.compilation_cache_max_gb
  )
  config = FLAGS.config
  from skipvqvc_jax.training import processes  # pylint: disable=import-outside-toplevel

  if processes.wanted(FLAGS.coordinator_address, config):
    processes.join(
      FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, FLAGS.join_timeout
    )
  # Each mode imports only its own part of the library, after jax.distributed.initialize (which
  # must precede other JAX use).
  if FLAGS.mode == 'train':
    from skipvqvc_jax.training import loop, tasks  # pylint: disable=import-outside-toplevel

    if config is None:
      raise errors.ConfigError(
        'training needs --config=FILE:PRESET, e.g. configs/vqvc_plus.py:demo'
      )
    workdir = FLAGS.workdir or tasks.default_workdir(config)
    logging.info(
      'JAX process %d/%d, devices: %s; workdir %s',
      jax.process_index(),
      jax.process_count(),
      jax.devices(),
      workdir,
    )
    hint = allocator_hint(jax.default_backend())
    if hint:
      logging.info('%s', hint)
    summary = loop.train_and_evaluate(config, workdir)
    logging.info('%s at step %d', summary['status'], summary['step'])
    if jax.process_index() == 0:
      logging.info('%s', next_steps(config, workdir, summary['status']))
    return EXIT_STATUS[summary['status']]
  elif FLAGS.mode == 'convert':
    _convert()
  else:
    _evaluate()
  return 0


# Debian's and Ubuntu's libjemalloc2: where the hint below looks for an allocator to recommend.
JEMALLOC = '/usr/lib/x86_64-linux-gnu/libjemalloc.so.2'


def allocator_hint(backend: str, maps: str = '/proc/self/maps') -> str | None:
  """A line for a CPU run on glibc's malloc where jemalloc is installed but not preloaded: handing the
  state's arrays to each step spends much of the host's time in malloc (docs/training.md). It must be
  preloaded before Python starts, so the program can only say so."""
  if backend != 'cpu' or not os.path.exists(JEMALLOC) or not os.path.exists(maps):
    return None
  with open(maps) as mapped:
    if any(name in line for line in mapped for name in ('jemalloc', 'tcmalloc')):
      return None
  return (
    f'hint: this CPU run allocates with glibc; LD_PRELOAD={JEMALLOC} before the command makes its '
    f'loop faster, with the same results (docs/training.md)'
  )


def _model_flag(mode: str) -> str:
  """The model a conversion or evaluation reads: --model, or --workdir (the same thing)."""
  if FLAGS.model and FLAGS.workdir and FLAGS.model != FLAGS.workdir:
    raise errors.ConversionError('give the model once: --model=DIR (or --workdir=DIR), not both')
  model = FLAGS.model or FLAGS.workdir
  if not model:
    raise errors.ConfigError(
      f'--mode={mode} needs --model: a training workdir, or a model directory (skipvqvc-port)'
    )
  return model


def _evaluate() -> None:
  model = _model_flag('eval')
  from skipvqvc_jax.evaluation import evaluate, report  # pylint: disable=import-outside-toplevel

  out_root = FLAGS.output_dir if FLAGS['output_dir'].present else ''
  metrics = evaluate.run(
    model,
    FLAGS.step,
    FLAGS.vocoder,
    num_pairs=FLAGS.eval_pairs,
    per_speaker=FLAGS.eval_per_speaker,
    test_dir=FLAGS.eval_dir or '',
    target=FLAGS.eval_target or '',
    out_root=out_root,
  )
  report_dir = storage.join(evaluate.eval_root(model, out_root), metrics['folder'])
  for line in report.summary_lines(metrics, report_dir):
    logging.info('%s', line)


CONFIGS_DIR = os.path.dirname(os.path.abspath(configs.__file__))  # the package's presets


def installed_presets(argv: list[str]) -> list[str]:
  """argv with `--config=FILE.py:PRESET` pointing at the installed preset file when FILE.py names no
  file here and is one of the package's (`vqvc_plus.py:demo` or `configs/vqvc_plus.py:demo` from any
  directory)."""
  out = []
  for arg in argv:
    if arg.startswith('--config='):
      path, colon, preset = arg[len('--config=') :].partition(':')
      installed = os.path.join(CONFIGS_DIR, os.path.basename(path))
      if (
        not os.path.exists(path)
        and os.path.dirname(path) in ('', 'configs')
        and os.path.isfile(installed)
      ):
        arg = f'--config={installed}{colon}{preset}'
    out.append(arg)
  return out


def run():
  """Console script `skipvqvc`, and main.py."""
  run_program(__name__, __doc__, main, define_flags, argv=installed_presets(sys.argv))


def run_convert():
  """Console script `skipvqvc-convert`: main.py --mode=convert."""
  _run_mode('convert', CONVERT_USAGE)


def run_eval():
  """Console script `skipvqvc-eval`: main.py --mode=eval."""
  _run_mode('eval', EVAL_USAGE)


def _run_mode(mode: str, usage: str) -> None:
  """A program of one mode: its own usage text and flags in --help, and no --mode flag."""
  if any(a == '--mode' or a.startswith('--mode=') for a in sys.argv[1:]):
    fail(f'{PROGRAMS[mode]} always runs --mode={mode}; for another mode run skipvqvc --mode=...')
  sys.argv.insert(1, f'--mode={mode}')
  names = [n for n, modes in FLAG_MODES.items() if mode in modes] + COMMON_FLAGS
  run_program(__name__, usage, main, define_flags, names, argv=sys.argv)
