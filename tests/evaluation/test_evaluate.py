"""Evaluation of a checkpoint trained here: its metrics (known answers), pairs, report and index."""

import dataclasses
import json

import numpy as np
import pytest

from skipvqvc_jax.core import errors
from skipvqvc_jax.data import audio, corpus, feature_files
from skipvqvc_jax.evaluation import evaluate, metrics
from skipvqvc_jax.evaluation import pairs as eval_pairs
from skipvqvc_jax.evaluation.metrics import world_available
from skipvqvc_jax.store import checkpoints
from tests.conftest import REPO

DEMO = REPO / 'data' / 'demo_corpus'


def test_equal_error_threshold():
  threshold, eer = metrics.equal_error_threshold([0.9, 0.8, 0.7, 0.4], [0.1, 0.2, 0.5, 0.3])
  assert eer == 0.25 and 0.4 <= threshold <= 0.5
  assert metrics.equal_error_threshold([0.9, 0.8], [0.1, 0.2])[1] == 0.0
  # The sorted-scores computation agrees with the definition, scanned threshold by threshold.
  rng = np.random.default_rng(0)
  same, different = rng.normal(0.7, 0.1, 300).round(3), rng.normal(0.5, 0.1, 900).round(3)
  candidates = np.unique(np.concatenate([same, different]))
  rates = [((same < t).mean(), (different >= t).mean()) for t in candidates]
  best = int(np.argmin([abs(fr - fa) for fr, fa in rates]))
  assert metrics.equal_error_threshold(same, different) == (
    pytest.approx(candidates[best]),
    pytest.approx(sum(rates[best]) / 2),
  )


def test_speaker_similarity_scores_every_pair_of_a_capped_set(small_features):
  """The statistics' plumbing with an embedding anyone can compute (the band means of the mel); the
  pairs' sources and references need not be among the capped utterances."""
  files = sorted(str(p) for p in (small_features / 'test').glob('*.npy'))
  embed = lambda mel: (lambda v: v / np.linalg.norm(v))(np.asarray(mel).mean(axis=1) + 6)
  # A perfect conversion: the reference itself.
  results = [
    eval_pairs.PairResult(pair, [np.load(pair.reference)])
    for pair in eval_pairs.choose_pairs(files, 6, seed=1)
  ]
  stats = evaluate.speaker_similarity(embed, eval_pairs.capped(files, 2, seed=0), results)
  assert stats['utterances'] == 4 and stats['to_target'] == pytest.approx(1.0)
  assert 0 <= stats['real_eer'] <= 0.5 and stats['accepted_as_target'] == 1.0
  # Identification among the 2 test speakers: the reference itself is nearest its own speaker.
  assert stats['speakers'] == 2 and stats['chance'] == 0.5
  assert stats['identified_as_target'] == 1.0 and all(r.identified_as_target for r in results)
  assert 0 <= stats['source_identified_as_target'] <= 0.5 <= stats['real_identified'] <= 1


def test_speaker_statistics_take_a_capped_seeded_share_of_each_speaker():
  files = [f'/x/spk{s}_{u:03d}.npy' for s in range(3) for u in range(10 + 30 * s)]
  chosen = eval_pairs.capped(files, 20, seed=0)
  counts = [sum(f.startswith(f'/x/spk{s}_') for f in chosen) for s in range(3)]
  assert counts == [10, 20, 20] and chosen == eval_pairs.capped(files, 20, seed=0)
  assert chosen == [f for f in files if f in set(chosen)]  # in file order


def test_lmcd_is_zero_for_identical_mels_and_grows_with_distortion():
  mel = audio.log_mel(audio.load(str(DEMO / 'awb' / 'awb_001.ogg')))
  assert metrics.lmcd_dtw(mel, mel) == pytest.approx(0.0, abs=1e-9)
  noisy = mel + np.random.default_rng(0).normal(0, 0.3, mel.shape)
  assert (
    0
    < metrics.lmcd_dtw(noisy, mel)
    < metrics.lmcd_dtw(noisy + 0.5 * np.sin(np.arange(80))[:, None], mel)
  )


def test_eval_writes_metrics_and_a_report(workdir, caplog):
  caplog.set_level('INFO')
  metrics = evaluate.run(str(workdir), num_pairs=4, report_pairs=2)
  if world_available():  # the first pair's source and conversion through WORLD, pictured and played
    first_page = (workdir / 'eval' / 'step_4' / 'report.html').read_text()
    assert first_page.count('through WORLD') == 2
    for name in ('source', 'conversion'):
      assert (workdir / 'eval' / 'step_4' / 'assets' / f'pair00_{name}_world.wav').is_file()
  # Each phase says how far it is.
  for phase in ('eval: reconstructing the test utterances: 12/12', 'eval: converting: 4/4 pairs'):
    assert phase in caplog.text, phase
  written = json.load(open(workdir / 'eval' / 'step_4' / 'metrics.json'))
  assert written == json.loads(json.dumps(metrics))
  assert written['test_utterances'] == 12 and written['recon_l1_logmel'] > 0
  for s in range(3):
    book = written[f'codebook_s{s}']
    assert (
      book['used'] + book['dead_codes'] == book['size'] and 1 <= book['perplexity'] <= book['size']
    )
  conversion = written['conversion']
  # The demo corpus is parallel: every pair has the target's own reading of the source sentence.
  assert conversion['pairs'] == conversion['parallel_pairs'] == 4
  assert 0 < conversion['lmcd_dtw_db'] < 100 and 0 < conversion['baseline_lmcd_dtw_db'] < 100
  pairs = json.load(open(workdir / 'eval' / 'step_4' / 'pairs.json'))
  # The pairs are a fixed, seeded choice over the test files: what choose_pairs gives again.
  test_files = feature_files.list_features(checkpoints.read_config(str(workdir)).data.test_dir)
  chosen = ('source', 'target_speaker', 'reference', 'parallel')
  assert [{k: p[k] for k in chosen} for p in pairs] == [
    dataclasses.asdict(p) for p in eval_pairs.choose_pairs(test_files, 4, seed=0)
  ]
  for pair in pairs:
    assert eval_pairs.utterance_name(pair['source']) == eval_pairs.utterance_name(pair['parallel'])
    assert eval_pairs.utterance_name(pair['reference']) != eval_pairs.utterance_name(pair['source'])
  similarity = written['speaker_similarity']
  if similarity['available']:  # with the eval extra installed
    assert -1 <= similarity['to_target'] <= 1 and -1 <= similarity['to_source'] <= 1
    assert 0 <= similarity['accepted_as_target'] <= 1 and 0 <= similarity['real_eer'] <= 0.5
    assert similarity['real_same_speaker'] > similarity['real_other_speaker']
  else:
    assert 'pip install' in similarity['why']
  assert evaluate.run(str(workdir), num_pairs=4, report_pairs=0)['conversion'] == conversion
  page = (workdir / 'eval' / 'step_4' / 'report.html').read_text()
  assert '<table>' in page and 'href="../index.html"' in page
  assert 'href="step_4/report.html"' in (workdir / 'eval' / 'index.html').read_text()
  for ref in [part.split('"')[0] for part in page.split('src="')[1:]]:
    assert (workdir / 'eval' / 'step_4' / ref).exists(), ref


def test_world_mcd_is_zero_for_the_same_recording_and_grows_with_distortion():
  pytest.importorskip('pyworld', reason='the standard MCD needs the eval extra (pyworld, pysptk)')
  pytest.importorskip('pysptk', reason='the standard MCD needs the eval extra (pyworld, pysptk)')
  wave = audio.trim(audio.load(str(DEMO / 'awb' / 'awb_001.ogg')))[0]
  tilted = lambda k: np.concatenate([wave[:1], wave[1:] - k * wave[:-1]])  # a spectral tilt
  assert metrics.world_mcd_dtw(wave, wave, 22050) == pytest.approx(0.0, abs=1e-9)
  assert (
    0
    < metrics.world_mcd_dtw(tilted(0.3), wave, 22050)
    < metrics.world_mcd_dtw(tilted(0.9), wave, 22050)
  )
  assert metrics.world_mel_cepstrum(wave, 22050).shape[1] == 24


def test_eval_into_one_target_on_other_features_sits_beside_the_runs_own(workdir, small_features):
  """--eval_target / --eval_dir (a model fine-tuned to one voice): every pair goes to that speaker,
  from the others, into a folder of its own that the index lists beside the run's evaluations."""
  test_dir = str(small_features / 'test')
  metrics = evaluate.run(
    str(workdir), num_pairs=3, report_pairs=0, test_dir=test_dir, target='esf2'
  )
  folder = workdir / 'eval' / 'step_4-on-test-to-esf2'
  assert metrics['target'] == 'esf2' and metrics['folder'] == folder.name
  pairs = json.load(open(folder / 'pairs.json'))
  assert len(pairs) == 3
  for pair in pairs:
    assert pair['target_speaker'] == 'esf2' and corpus.speaker_of(pair['source']) != 'esf2'
  assert f'href="{folder.name}/report.html"' in (workdir / 'eval' / 'index.html').read_text()
  with pytest.raises(errors.CorpusError, match='not a test speaker; they are esf2, esm1'):
    evaluate.run(str(workdir), num_pairs=3, target='nobody')
  assert not (workdir / 'eval' / 'step_4-to-nobody').exists()


def test_a_model_directory_is_evaluated_on_given_features_and_never_written(
  workdir, small_features, tmp_path
):
  """skipvqvc-eval of a model directory (what skipvqvc-port writes and users share): without test
  features one line; with --eval_dir a report in ./NAME-eval/model-on-FOLDER/, and not a byte written into
  the model directory (it was an AttributeError, and left an empty checkpoints/ inside it)."""
  import subprocess
  import sys

  from skipvqvc_jax.inference import model_dirs

  model_dir = tmp_path / 'shared_model'
  model_dirs.release(str(workdir), str(model_dir))
  before = sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob('*'))
  eval_ = lambda *flags: subprocess.run(
    [sys.executable, REPO / 'main.py', '--mode=eval', *flags],
    cwd=tmp_path,
    capture_output=True,
    text=True,
    timeout=600,
  )
  refused = eval_(f'--model={model_dir}')
  assert refused.returncode == 1, refused.stderr[-2000:]
  assert [line for line in refused.stderr.splitlines() if line.startswith('error')] == [
    f'error: {model_dir} is a model directory: it names no test speakers; give --eval_dir=FOLDER '
    f'of test features (skipvqvc-preprocess writes them, e.g. FEATURES/test)'
  ]
  done = eval_(f'--workdir={model_dir}', f'--eval_dir={small_features / "test"}', '--eval_pairs=2')
  assert done.returncode == 0, done.stderr[-3000:]
  report = tmp_path / 'shared_model-eval' / 'model-on-test'
  metrics = json.loads((report / 'metrics.json').read_text())
  assert metrics['step'] is None and metrics['conversion']['pairs'] == 2
  assert (report / 'report.html').is_file() and f'report: {report}' in done.stderr
  assert sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob('*')) == before
