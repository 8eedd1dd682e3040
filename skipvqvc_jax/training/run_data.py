"""A run's data: `resolve_data` turns a config's data fields into the feature folders a run reads,
preprocessing an audio corpus into the workdir first when it is given one."""

from __future__ import annotations

import dataclasses

import jax
from absl import logging

from skipvqvc_jax.core import storage
from skipvqvc_jax.core.errors import CorpusError
from skipvqvc_jax.data import audio, corpus, f0, layouts, preprocessing
from skipvqvc_jax.training import sharding, trainers


@dataclasses.dataclass
class Data:
  train_dir: str
  test_dir: str
  stats_file: str


def _holds_features(folder: str) -> bool:
  return storage.isdir(folder) and any(f.endswith('.npy') for f in storage.listdir(folder))


DEMO_CORPUS = 'data/demo_corpus'  # the demo presets' corpus: in the repository, not the package


def check_train_dir(config) -> None:
  """One line when data.train_dir is unset or missing (checked before a run touches its workdir)."""
  train_dir = config.data.train_dir
  if not train_dir:
    raise CorpusError(
      'no training data: set --config.data.train_dir to a features folder or an audio corpus'
    )
  if storage.isdir(train_dir):
    return
  if train_dir == DEMO_CORPUS:
    raise CorpusError(
      f"data.train_dir {DEMO_CORPUS} (the demo presets' bundled corpus) is not in this directory: "
      f'it comes with the repository, not the installed package; run from a clone of the '
      f'repository, or set --config.data.train_dir to your own corpus or features folder'
    )
  raise CorpusError(f'data.train_dir {train_dir} does not exist')


def resolve_data(config, workdir: str) -> Data:
  """Feature folders for training and testing; audio corpora are preprocessed into the workdir first."""
  params = audio.FeatureParams.from_dict(config.features)
  train_dir, test_dir = config.data.train_dir, config.data.test_dir
  check_train_dir(config)
  # An F0 trainer's audio is preprocessed with F0 beside the features.
  takes_f0 = trainers.spec(config.trainer).f0 if 'trainer' in config else False
  f0_params = f0.F0Params(config.data.get('f0_method', 'pyin')) if takes_f0 else None
  if storage.is_url(train_dir) and not _holds_features(train_dir):
    raise CorpusError(
      f'data.train_dir {train_dir} holds no .npy features: a bucket holds features, not audio; '
      f'preprocess the corpus with its output folder there (skipvqvc-preprocess INPUT_DIR {train_dir})'
    )
  if not _holds_features(train_dir):
    # An audio corpus: preprocess once into the workdir (resumable, so a rerun reuses it).
    num_test = config.data.num_test_speakers
    out = _preprocess_once(
      train_dir,
      storage.join(workdir, 'features'),
      params,
      config.seed,
      None if num_test < 0 else num_test,
      config.data,
      f0_params,
    )
    train_dir = storage.join(out, 'train')
    test_dir = test_dir or storage.join(out, 'test')
  elif not test_dir:
    sibling = storage.join(storage.dirname(storage.abspath(train_dir)), 'test')
    test_dir = sibling if _holds_features(sibling) else train_dir
    if test_dir == train_dir:
      logging.warning('no test_dir and no test/ beside train_dir: evaluating on training speakers')
  if storage.isdir(test_dir) and not _holds_features(test_dir):
    # Test audio: every speaker in it is a test speaker, so all of it lands on the 'train' side.
    out = _preprocess_once(
      test_dir,
      storage.join(workdir, 'test_features'),
      params,
      config.seed,
      0,
      config.data,
      f0_params,
    )
    test_dir = storage.join(out, 'train')
  if test_dir and not _holds_features(test_dir):
    raise CorpusError(f'data.test_dir {test_dir} holds no .npy features')
  for folder in {train_dir, test_dir}:
    manifest_dir = corpus.manifest_root(folder)
    if manifest_dir:
      corpus.check_feature_params(manifest_dir, params)
    else:
      logging.warning('%s has no manifest.json: cannot check its feature parameters', folder)
  stats_file = config.data.stats_file or storage.join(
    corpus.manifest_root(train_dir) or storage.dirname(storage.abspath(train_dir)),
    corpus.STATS_FILE,
  )
  return Data(train_dir, test_dir, stats_file)


def _preprocess_once(
  audio_dir: str, out: str, params, seed: int, num_test: int | None, data, f0_params=None
) -> str:
  if jax.process_index() == 0:
    logging.info('preprocessing the audio in %s into %s', audio_dir, out)
    preprocessing.preprocess(
      audio_dir,
      out,
      params,
      num_test_speakers=num_test,
      seed=seed,
      progress=False,
      log=logging.info,
      layout=layouts.Options(data.get('speaker_depth') or 1, data.get('mic', 'mic1')),
      f0_params=f0_params,
    )
  sharding.sync('preprocess')
  return out
