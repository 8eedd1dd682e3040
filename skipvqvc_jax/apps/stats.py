"""Per-band statistics of an existing features folder, for the mean/std trainers (skipvqvc-stats).

    skipvqvc-stats FEATURES [--definition=frames|per_utterance] [--output=FILE] [--overwrite]

FEATURES is a folder of .npy log-mels: preprocess.py's train/, or one the original's preprocessing
made. --definition=frames (ours, what preprocess.py writes): every frame weighs the same;
per_utterance (the original's preprocessing_mean_std.py): the mean over utterances of each one's
mean and of each one's std. The file goes where training looks for it by default (stats.npz beside
FEATURES, or in the folder of its manifest.json), or to --output; an existing one is kept unless
--overwrite.
"""

from absl import app, flags

from skipvqvc_jax.apps.usage import old_spelling, one_line_errors, run_program
from skipvqvc_jax.core import storage
from skipvqvc_jax.core.errors import CorpusError
from skipvqvc_jax.data import corpus, feature_files


def define_flags() -> None:
  """Defines this program's flags: called by run(), not at import, so that importing two programs
  in one process (a test, a notebook) does not define a flag twice."""
  flags.DEFINE_enum(
    'definition',
    'frames',
    list(corpus.STATS_DEFINITIONS),
    "frames: every frame weighs the same (ours); per_utterance: the mean of the utterances' "
    "means and stds (the original's preprocessing_mean_std.py).",
  )
  flags.DEFINE_string(
    'output', None, 'Where to write the stats.npz (default: where training looks).'
  )
  old_spelling('out', 'output')
  flags.DEFINE_bool('overwrite', False, 'Replace an existing statistics file.')


FLAGS = flags.FLAGS


def default_path(features_dir: str) -> str:
  """Where training finds statistics for data.train_dir=features_dir (input_pipeline's rule)."""
  root = corpus.manifest_root(features_dir) or storage.dirname(storage.abspath(features_dir))
  return storage.join(root, corpus.STATS_FILE)


@one_line_errors
def main(argv) -> int:
  if len(argv) != 2:
    raise app.UsageError('usage: skipvqvc-stats FEATURES [--definition=...] [--output=FILE]')
  out = FLAGS.output or default_path(argv[1])
  if storage.exists(out) and not FLAGS.overwrite:
    raise CorpusError(f'{out} exists: pass --overwrite to replace it, or --output=FILE for another')
  stats = corpus.feature_stats(feature_files.list_features(argv[1]), FLAGS.definition)
  corpus.save_stats(out, stats)
  print(
    f'{out}: {FLAGS.definition} statistics of {stats["utterances"]} utterances '
    f'({stats["frames"]} frames, {len(stats["mean"])} bands); train with '
    f'--config.trainer=mean_std (or multi) --config.data.stats_file={out}'
  )
  return 0


def run():
  """Console script `skipvqvc-stats`."""
  run_program(__name__, __doc__, main, define_flags)
