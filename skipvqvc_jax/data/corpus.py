"""A speech corpus on disk: finding utterances, the speaker split, statistics, the manifest, the audio
behind a feature file.

Layout written by `preprocessing.preprocess` (the arrow audio -> features of the data path):

    OUTPUT_DIR/train/{speaker}_{utterance}.npy   float32 (n_mels, frames) log-mels
    OUTPUT_DIR/test/{speaker}_{utterance}.npy    speakers unseen in training
    OUTPUT_DIR/split.json                        which speakers are on which side
    OUTPUT_DIR/stats.npz                         per-band mean and std over the training frames
    OUTPUT_DIR/manifest.json                     feature parameters, counts, every file and every skip
"""

from __future__ import annotations

import dataclasses
import io
import os
import random
from collections.abc import Sequence

import numpy as np

from skipvqvc_jax.core import storage
from skipvqvc_jax.core.errors import CorpusError
from skipvqvc_jax.core.fileio import atomic_write, load_json
from skipvqvc_jax.data import audio, layouts

AUDIO_EXTENSIONS = ('.wav', '.flac', '.mp3', '.ogg')
SPLITS = ('train', 'test')
MANIFEST = 'manifest.json'
SPLIT_FILE = 'split.json'
STATS_FILE = 'stats.npz'
MANIFEST_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Utterance:
  source: str  # path relative to the input root
  speaker: str
  name: str  # utterance name, without the speaker prefix
  transcript: str | None = None  # what is said, where the corpus has transcripts

  @property
  def feature_file(self) -> str:
    return f'{self.speaker}_{self.name}.npy'


def speaker_name(folder: str) -> str:
  """The speaker name of a speaker folder: '_' separates speaker from utterance in feature names, so
  it becomes '-' (`fl_rms` -> `fl-rms`). Flags naming speakers accept either spelling."""
  return os.path.basename(os.path.normpath(folder)).replace('_', '-')


# The original's preprocessing names features after their path: wav48_p225_001.npy.
ORIGINAL_PREFIXES = (layouts.VCTK_092 + '_', layouts.VCTK_080 + '_')


def speaker_of(feature_file: str) -> str:
  """The speaker of a `{speaker}_{utterance}.npy` feature file (speaker names never hold '_'); the
  original's `wav48_{speaker}_{utterance}.npy` names are read too."""
  name = os.path.basename(feature_file)
  for prefix in ORIGINAL_PREFIXES:
    if name.startswith(prefix):
      name = name[len(prefix) :]
      break
  return name.split('_', 1)[0]


# ---- finding audio --------------------------------------------------------------------------------


def audio_root(input_dir: str) -> str:
  """The folder the manifest's sources are relative to: VCTK's wav48*/ inside a VCTK root, else
  input_dir."""
  vctk = layouts.vctk_root(input_dir)
  return vctk[1] if vctk else input_dir


def find_utterances(
  input_dir: str, options: layouts.Options = layouts.Options()
) -> tuple[list[Utterance], list[dict], layouts.Layout]:
  """Every audio file of a corpus (its layout: `layouts`), the files that cannot be used with
  reasons, and the layout."""
  if not os.path.isdir(input_dir):
    raise CorpusError(f'input dir {input_dir} does not exist or is not a folder')
  layout = layouts.detect(input_dir, options)
  root = layout.root
  utterances, skipped = [], []
  for folder, dirs, files in os.walk(root, followlinks=True):
    dirs.sort()
    for file in sorted(files):
      if file.startswith('.'):
        continue
      rel = os.path.relpath(os.path.join(folder, file), root)
      stem, ext = os.path.splitext(file)
      speaker_dir = layouts.speaker_folder(rel, layout)
      if not os.path.exists(os.path.join(folder, file)):
        skipped.append(dict(source=rel, reason='a broken link (what it points to is gone)'))
      elif file.endswith('.txt') and layout.name != 'flat':
        continue  # the corpus' transcripts
      elif ext.lower() not in AUDIO_EXTENSIONS:
        skipped.append(
          dict(
            source=rel,
            reason=f'not an audio file (extension {ext or "none"}; '
            f'reading {", ".join(AUDIO_EXTENSIONS)})',
          )
        )
      elif speaker_dir is None:
        skipped.append(dict(source=rel, reason='not inside a <speaker>/ folder'))
      else:
        # '_' separates speaker from utterance in feature names, so it may not occur in a speaker.
        speaker = speaker_name(speaker_dir)
        name = layouts.utterance(stem, speaker, layout)
        if name is not None:  # None: the other microphone of VCTK 0.92
          utterances.append(Utterance(rel, speaker, name, layouts.transcript(rel, layout)))
  if not utterances and not skipped:
    raise CorpusError(f'input dir {input_dir} is empty: expected <speaker>/<utterance>.wav files')
  seen: dict[str, str] = {}
  for utt in utterances:
    if utt.feature_file in seen:
      raise CorpusError(
        f'{utt.source} and {seen[utt.feature_file]} would both become '
        f'{utt.feature_file}; rename one'
      )
    seen[utt.feature_file] = utt.source
  return utterances, skipped, layout


# ---- the speaker split ----------------------------------------------------------------------------


def choose_test_speakers(speakers: Sequence[str], num_test: int | None, seed: int) -> list[str]:
  """A seeded choice of unseen test speakers; by default a tenth of them, at least two of four or
  more (one of two or three)."""
  speakers = sorted(speakers)
  if num_test is None:
    # A tenth, but two where four or more speakers leave room: evaluation converts between two.
    num_test = (
      max(2 if len(speakers) >= 4 else 1, round(len(speakers) / 10)) if len(speakers) >= 2 else 0
    )
  if not 0 <= num_test < len(speakers):
    raise CorpusError(
      f'--num_test_speakers={num_test} must leave at least one of the '
      f'{len(speakers)} speakers for training'
    )
  return sorted(random.Random(seed).sample(speakers, num_test))


def resolve_split(
  output_dir: str,
  speakers: Sequence[str],
  test_speakers: Sequence[str] | None,
  num_test: int | None,
  seed: int,
) -> dict:
  """The split to use: split.json from an earlier run (so reruns agree), the listed or seeded one."""
  path = storage.join(output_dir, SPLIT_FILE)
  speakers = sorted(set(speakers))
  if storage.exists(path):
    split = load_json(path)
    both = sorted(set(split.get('train', [])) & set(split.get('test', [])))
    if both:
      raise CorpusError(
        f'{path} puts {", ".join(both)} on both sides (train and test): a test speaker must be '
        f'unseen in training; remove each from one list'
      )
    known = set(split.get('train', [])) | set(split.get('test', []))
    if test_speakers is not None and sorted(test_speakers) != sorted(split.get('test', [])):
      raise CorpusError(
        f'{path} lists test speakers {split.get("test")}, not --test_speakers; '
        f'delete it to change the split'
      )
    new = sorted(set(speakers) - known)
    if new:
      raise CorpusError(
        f'{path} does not place speakers {", ".join(new)}; add them to its '
        f'"train" or "test" list, or delete it to choose a new split'
      )
    return split
  if test_speakers is not None:
    unknown = sorted(set(test_speakers) - set(speakers))
    if unknown:
      raise CorpusError(f'--test_speakers names speakers with no audio: {", ".join(unknown)}')
    test = sorted(set(test_speakers))
    if len(test) == len(speakers):
      raise CorpusError('--test_speakers leaves no speaker for training')
    rule = 'listed with --test_speakers'
  else:
    test = choose_test_speakers(speakers, num_test, seed)
    rule = f'{len(test)} speakers drawn with random.Random({seed}).sample from the sorted list'
  return dict(train=[s for s in speakers if s not in test], test=test, rule=rule)


def trimmed_source(source_path: str, params: audio.FeatureParams, trim) -> np.ndarray:
  """The waveform a feature file was made from: the source cut to the manifest's trim range."""
  y = audio.load(source_path, params)
  return y[trim[0] : trim[1]] if trim else audio.trim(y, params)[0]


def manifest_root(features_dir: str) -> str | None:
  """The folder holding the manifest of a features folder: itself or its parent (train/, test/)."""
  for folder in (features_dir, storage.dirname(storage.abspath(features_dir))):
    if storage.isfile(storage.join(folder, MANIFEST)):
      return folder
  return None


def source_waveforms(feature_files: Sequence[str], params: audio.FeatureParams) -> dict:
  """{feature file: the trimmed audio it was made from, or None when its manifest or source is gone}.

  Each manifest is read once, however many files it lists."""
  manifests: dict[str, dict | None] = {}
  waves = {}
  for feature_file in feature_files:
    root = manifest_root(os.path.dirname(os.path.abspath(feature_file)))
    if root is not None and root not in manifests:
      manifest = read_manifest(root)
      manifests[root] = dict(
        source_root=audio_root(manifest['input_dir']),
        items={i['file']: i for i in manifest['items']},
      )
    entry = manifests.get(root) if root is not None else None
    item = entry and entry['items'].get(
      os.path.relpath(os.path.abspath(feature_file), os.path.abspath(root))
    )
    source = item and os.path.join(entry['source_root'], item['source'])
    waves[feature_file] = (
      trimmed_source(source, params, item.get('trim'))
      if source and os.path.isfile(source)
      else None
    )
  return waves


# numpy's public header readers, by the format version a file starts with.
_NPY_HEADER_READERS = {
  (1, 0): np.lib.format.read_array_header_1_0,
  (2, 0): np.lib.format.read_array_header_2_0,
}


def _npy_header(f) -> tuple[tuple[int, ...], np.dtype]:
  """(shape, dtype) of the .npy file `f` is at the start of; leaves `f` at its data."""
  reader = _NPY_HEADER_READERS.get(np.lib.format.read_magic(f))
  if reader is None:
    raise ValueError('an .npy format version this reader does not know')
  shape, _, dtype = reader(f)
  return shape, dtype


def readable_frames(path: str, rows: int) -> int | None:
  """Frames of a (rows, frames) .npy file (a feature, an F0 file), or None when it cannot be used
  (truncated, other rows). In a bucket only its header is read, and its size checked against it."""
  try:
    if storage.is_url(path):
      with storage.open(path, 'rb') as f:
        shape, dtype = _npy_header(f)
        header = f.tell()
      if storage.getsize(path) != header + int(np.prod(shape)) * np.dtype(dtype).itemsize:
        return None
    else:
      shape = np.load(path, mmap_mode='r', allow_pickle=False).shape
  except (OSError, ValueError, EOFError):
    return None
  return int(shape[1]) if len(shape) == 2 and shape[0] == rows and shape[1] else None


def _pooled(utterances: list[tuple[int, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
  """Every frame weighs the same: the mean and std of all frames together."""
  frames = sum(n for n, _, _ in utterances)
  mean = sum(n * m for n, m, _ in utterances) / frames
  square = sum(n * (s**2 + m**2) for n, m, s in utterances) / frames
  return mean, np.sqrt(np.maximum(square - mean**2, 0.0))


def _per_utterance(utterances: list[tuple[int, np.ndarray, np.ndarray]]):
  """Every utterance weighs the same: the mean of their means, and the mean of their stds."""
  return np.mean([m for _, m, _ in utterances], axis=0), np.mean(
    [s for _, _, s in utterances], axis=0
  )


# How per-band statistics combine the utterances' own: the definitions a stats.npz may have.
STATS_DEFINITIONS = {
  'frames': _pooled,  # ours: preprocessing writes it
  'per_utterance': _per_utterance,  # the original's preprocessing_mean_std.py (mean.npy, std.npy)
}


def feature_stats(paths: Sequence[str], definition: str = 'frames') -> dict:
  """Per-band mean and std of the feature files `paths` by `definition` (STATS_DEFINITIONS), with the
  frame and utterance counts; a file that cannot be read is a CorpusError naming it."""
  utterances = []
  for path in paths:
    try:
      mel = np.load(io.BytesIO(storage.read_bytes(path)) if storage.is_url(path) else path)
    except (OSError, ValueError, EOFError) as e:
      raise CorpusError(
        f'{path}: cannot read it ({type(e).__name__}); remove or remake it'
      ) from None
    if mel.ndim != 2 or mel.shape[1] == 0:
      raise CorpusError(f'{path}: not a (bands, frames) feature (shape {mel.shape})')
    mel = mel.astype(np.float64)
    utterances.append((mel.shape[1], mel.mean(axis=1), mel.std(axis=1)))
  if not utterances:
    raise CorpusError('no features to compute statistics from')
  if len({m.shape for _, m, _ in utterances}) > 1:
    raise CorpusError(
      f'the features have different band counts: {sorted({m.shape[0] for _, m, _ in utterances})}'
    )
  mean, std = STATS_DEFINITIONS[definition](utterances)
  return dict(
    mean=mean.astype(np.float32),
    std=std.astype(np.float32),
    frames=sum(n for n, _, _ in utterances),
    utterances=len(utterances),
    definition=definition,
  )


def save_stats(path: str, stats: dict) -> None:
  """A stats.npz the mean/std trainers read (written whole or not at all)."""

  def write(tmp):
    with open(tmp, 'wb') as f:
      np.savez(f, **stats)

  atomic_write(path, write)


def write_stats(output_dir: str, train_files: Sequence[str]) -> None:
  """Per-band mean and std over every training frame (the mean/std trainer's normalisation)."""
  if not train_files:
    raise CorpusError(f'{output_dir}: no training features to compute statistics from')
  stats = feature_stats([storage.join(output_dir, rel) for rel in train_files])
  save_stats(storage.join(output_dir, STATS_FILE), stats)


def manifest(
  input_dir,
  params,
  min_frames,
  split,
  items,
  skipped,
  layout: layouts.Layout,
  complete: bool = True,
) -> dict:
  """The manifest of a features folder: what was made from what, with which parameters."""
  seconds_per_frame = params.hop_length / params.sample_rate
  per_speaker: dict[str, dict] = {}
  for item in items:
    entry = per_speaker.setdefault(item['speaker'], dict(utterances=0, frames=0))
    entry['utterances'] += 1
    entry['frames'] += item['frames']
  side_of = lambda speaker: 'train' if speaker in split['train'] else 'test'
  totals = {}
  for side in SPLITS:
    frames = sum(v['frames'] for s, v in per_speaker.items() if side_of(s) == side)
    totals[side] = dict(
      speakers=sum(1 for s in per_speaker if side_of(s) == side),
      utterances=sum(v['utterances'] for s, v in per_speaker.items() if side_of(s) == side),
      frames=frames,
      seconds=round(frames * seconds_per_frame, 2),
    )
  return dict(
    version=MANIFEST_VERSION,
    complete=complete,  # False: preprocessing stopped; the items are what it had made
    feature_params=params.to_dict(),
    layout=layout.to_dict(),
    min_frames=min_frames,
    input_dir=os.path.abspath(input_dir),
    split=dict(train=split['train'], test=split['test']),
    totals=totals,
    speakers={s: dict(v, split=side_of(s)) for s, v in sorted(per_speaker.items())},
    items=items,
    skipped=sorted(skipped, key=lambda s: s['source']),
  )


def read_manifest(features_dir: str) -> dict:
  path = storage.join(features_dir, MANIFEST)
  if not storage.isfile(path):
    raise CorpusError(f'{features_dir} has no {MANIFEST}: run preprocess.py on your audio first')
  manifest = load_json(path)
  if not manifest.get('complete', True):
    raise CorpusError(
      f'preprocessing of {features_dir} did not finish: run preprocess.py on its '
      f'audio again to complete it'
    )
  if manifest.get('version', 0) > MANIFEST_VERSION:
    raise CorpusError(
      f'{path} has version {manifest["version"]}, newer than this skipvqvc_jax reads '
      f'({MANIFEST_VERSION}): upgrade skipvqvc_jax or preprocess again'
    )
  return manifest


def check_feature_params(features_dir: str, expected: audio.FeatureParams) -> None:
  """Refuses features made with other parameters than `expected`, naming each difference."""
  found = audio.FeatureParams.from_dict(read_manifest(features_dir)['feature_params'])
  problems = found.mismatches(expected)
  if problems:
    raise CorpusError(
      f'{features_dir} was made with other feature parameters than the config '
      f'({"; ".join(problems)}, manifest vs config)'
    )
