"""data.corpus on a preprocessed folder: the split, the statistics, the manifest."""

import json
import os

import numpy as np
import pytest

from skipvqvc_jax.core import errors, fileio
from skipvqvc_jax.data import audio, corpus, preprocessing


def test_stats_are_over_training_frames_only(processed):
  out, manifest, _ = processed
  train = np.concatenate(
    [
      np.load(os.path.join(out, i['file']))
      for i in manifest['items']
      if i['file'].startswith('train')
    ],
    axis=1,
  )
  stats = np.load(os.path.join(out, 'stats.npz'))
  np.testing.assert_allclose(stats['mean'], train.mean(axis=1), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(stats['std'], train.std(axis=1), rtol=1e-4, atol=1e-5)
  assert int(stats['frames']) == train.shape[1]


def test_manifest_records_parameters_durations_and_trim(processed):
  _, manifest, _ = processed
  assert manifest['feature_params'] == audio.FeatureParams().to_dict()
  frames = sum(i['frames'] for i in manifest['items'])
  seconds = manifest['totals']['train']['seconds'] + manifest['totals']['test']['seconds']
  assert abs(seconds - frames * 256 / 22050) < 0.05
  assert all(i['trim'][1] > i['trim'][0] >= 0 for i in manifest['items'])


def test_a_split_with_a_speaker_on_both_sides_is_refused(tree, processed, tmp_path):
  """A hand-edited split.json naming a speaker as train and test: refused naming the speaker, before
  any feature moves (it was accepted, and the manifest's totals contradicted the disk)."""
  import shutil

  root, _ = tree
  out = tmp_path / 'features'
  shutil.copytree(processed[0], out)
  split = json.loads((out / 'split.json').read_text())
  speaker = split['test'][0]
  split['train'].append(speaker)
  (out / 'split.json').write_text(json.dumps(split))
  before = sorted(p.relative_to(out) for p in out.rglob('*'))
  with pytest.raises(errors.CorpusError, match=f'puts {speaker} on both sides'):
    preprocessing.preprocess(root, str(out), workers=1, progress=False, log=lambda _: None)
  assert sorted(p.relative_to(out) for p in out.rglob('*')) == before


def test_a_manifest_from_a_newer_version_is_refused(processed, tmp_path):
  out, _, _ = processed
  manifest = fileio.load_json(os.path.join(out, corpus.MANIFEST))
  assert manifest['version'] == corpus.MANIFEST_VERSION
  fileio.save_json(
    str(tmp_path / corpus.MANIFEST), dict(manifest, version=corpus.MANIFEST_VERSION + 1)
  )
  with pytest.raises(errors.CorpusError, match='newer than this skipvqvc_jax reads'):
    corpus.read_manifest(str(tmp_path))


def test_seeded_split_is_reproducible_and_disjoint():
  speakers = [f'p{i:03d}' for i in range(30)]
  a = corpus.choose_test_speakers(speakers, None, seed=3)
  assert a == corpus.choose_test_speakers(list(reversed(speakers)), None, seed=3)
  assert len(a) == 3 and a != corpus.choose_test_speakers(speakers, None, seed=4)
  # Under 15 speakers a tenth would be one, and evaluation needs two to convert between.
  assert [len(corpus.choose_test_speakers(speakers[:n], None, seed=0)) for n in (2, 3, 4, 14)] == [
    1,
    1,
    2,
    2,
  ]
