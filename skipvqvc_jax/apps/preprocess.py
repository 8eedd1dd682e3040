"""Audio corpus -> MelGAN-compatible log-mel features (skipvqvc-preprocess; preprocess.py in a checkout).

    skipvqvc-preprocess INPUT_DIR OUTPUT_DIR [flags]

INPUT_DIR is a corpus in one of these layouts, recognised by itself (docs/data.md):
  VCTK 0.92      wav48_silence_trimmed/<speaker>/<speaker>_<n>_mic{1,2}.flac, txt/ (--mic chooses one)
  VCTK 0.80      wav48/<speaker>/<speaker>_<n>.wav, txt/<speaker>/<speaker>_<n>.txt
  LibriTTS       [<subset>/]<speaker>/<chapter>/<utterance>.wav with .normalized.txt beside it
  LibriSpeech    [<subset>/]<speaker>/<chapter>/*.flac with the chapter's .trans.txt
  any other      <speaker>/<utterance>.{wav,flac,mp3,ogg} (--speaker_depth for deeper speaker folders)
OUTPUT_DIR gets train/ and test/ (unseen speakers) features, split.json, stats.npz and manifest.json.
"""

import signal
import sys

from absl import app, flags

from skipvqvc_jax.apps.usage import one_line_errors, run_program
from skipvqvc_jax.core import errors, storage
from skipvqvc_jax.data import audio, f0, layouts, preprocessing


def define_flags() -> None:
  """Defines this program's flags: called by run(), not at import, so that importing two programs
  in one process (a test, a notebook) does not define a flag twice."""
  _defaults = audio.FeatureParams()
  flags.DEFINE_integer('workers', None, 'Processes to decode with (default: all cores).')
  flags.DEFINE_integer('min_frames', 100, 'Skip utterances with fewer frames after trimming.')
  flags.DEFINE_list(
    'test_speakers', None, 'Speakers held out for testing (default: a seeded tenth).'
  )
  flags.DEFINE_integer('num_test_speakers', None, 'How many speakers the seeded rule holds out.')
  flags.DEFINE_integer('seed', 0, 'Seed of the test-speaker choice.')
  flags.DEFINE_integer(
    'speaker_depth',
    1,
    'Which folder below the corpus root names the speaker (1: the top folder; LibriTTS and '
    'LibriSpeech subset folders are looked through).',
    lower_bound=1,
  )
  flags.DEFINE_enum(
    'mic', 'mic1', ['mic1', 'mic2'], 'VCTK 0.92: the microphone whose files are read.'
  )
  flags.DEFINE_integer('sample_rate', _defaults.sample_rate, 'Audio is resampled to this rate.')
  flags.DEFINE_integer('n_fft', _defaults.n_fft, 'FFT size.')
  flags.DEFINE_integer('hop_length', _defaults.hop_length, 'Samples between frames.')
  flags.DEFINE_integer('win_length', _defaults.win_length, 'Hann window length.')
  flags.DEFINE_integer('n_mels', _defaults.n_mels, 'Mel bands.')
  flags.DEFINE_float(
    'top_db', _defaults.trim_top_db, 'Silence trimming threshold; negative: no trim.'
  )
  flags.DEFINE_enum(
    'f0',
    None,
    [*f0.METHODS, f0.CREPE],
    'Also F0 per frame (for vqvc+_pitch) into OUTPUT_DIR/f0/: harvest or dio (pyworld, the [listen] '
    'extra), pyin (librosa), or crepe (read the <name>.f0.csv CREPE wrote beside each audio file).',
  )
  flags.DEFINE_float('f0_min', f0.F0Params.fmin, 'Lowest F0 searched, Hz.')
  flags.DEFINE_float('f0_max', f0.F0Params.fmax, 'Highest F0 searched, Hz.')
  flags.DEFINE_bool('progress', True, 'Show a progress bar.')


FLAGS = flags.FLAGS


def _stop(signum, frame):
  raise KeyboardInterrupt  # SIGTERM stops like Ctrl-C: the pool ends, finished features are kept


@one_line_errors
def main(argv):
  if len(argv) != 3:
    raise app.UsageError('usage: skipvqvc-preprocess INPUT_DIR OUTPUT_DIR [flags]')
  signal.signal(signal.SIGTERM, _stop)
  params = audio.FeatureParams(
    sample_rate=FLAGS.sample_rate,
    n_fft=FLAGS.n_fft,
    hop_length=FLAGS.hop_length,
    win_length=FLAGS.win_length,
    n_mels=FLAGS.n_mels,
    trim_top_db=FLAGS.top_db if FLAGS.top_db >= 0 else None,
  )
  try:
    manifest = preprocessing.preprocess(
      argv[1],
      argv[2],
      params,
      min_frames=FLAGS.min_frames,
      test_speakers=FLAGS.test_speakers,
      num_test_speakers=FLAGS.num_test_speakers,
      seed=FLAGS.seed,
      workers=FLAGS.workers,
      progress=FLAGS.progress,
      log=lambda line: print(errors.printable(line)),
      layout=layouts.Options(FLAGS.speaker_depth, FLAGS.mic),
      f0_params=f0.F0Params(FLAGS.f0, FLAGS.f0_min, FLAGS.f0_max) if FLAGS.f0 else None,
    )
  except KeyboardInterrupt:
    print(
      f'error: preprocessing of {argv[1]} stopped; run the same command to continue (the features '
      f'already written are kept)',
      file=sys.stderr,
    )
    return 1
  t = manifest['totals']
  print(
    f'{argv[2]}: train {t["train"]["speakers"]} speakers, {t["train"]["utterances"]} '
    f'utterances, {t["train"]["seconds"] / 60:.1f} min; test {t["test"]["speakers"]} speakers, '
    f'{t["test"]["utterances"]} utterances, {t["test"]["seconds"] / 60:.1f} min; '
    f'{len(manifest["skipped"])} files skipped'
  )
  trainer = 'python main.py' if sys.argv[0].endswith('.py') else 'skipvqvc'
  print(
    f'next: train with {trainer} --config=configs/vqvc_plus.py:n64_ch64 '
    f'--config.data.train_dir={storage.join(argv[2], "train")} (the test speakers beside it are '
    f'found), or see the presets in docs/training.md'
  )
  return 0


def run():
  """Console script `skipvqvc-preprocess`, and preprocess.py."""
  run_program(__name__, __doc__, main, define_flags)
