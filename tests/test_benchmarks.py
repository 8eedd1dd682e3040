"""The accelerator benchmark in its smoke mode on this CPU, so that the script a GPU session runs
cannot rot: every part runs and reports figures of the right kind."""

import json
import sys

from skipvqvc_jax.training import loop
from tests.conftest import run_in_repo, tiny_config


def _benchmark(script: str, out, *flags: str, timeout: int) -> object:
  """What `python benchmarks/SCRIPT FLAGS --out=OUT` wrote, once it exited 0."""
  result = run_in_repo([sys.executable, f'benchmarks/{script}', *flags, f'--out={out}'], timeout)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(out.read_text())


def test_the_accelerator_benchmark_runs_every_part(small_features, tmp_path):
  out = tmp_path / 'accelerator.json'
  report = _benchmark('accelerator.py', out, '--smoke', f'--features={small_features}', timeout=900)
  assert report['smoke'] and 'cpu' in report['device']
  steps = {row['dtype']: row for row in report['train_step']}
  assert set(steps) == {'float32', 'bfloat16'}
  assert all(row['ms_per_step'] > 0 and row['compile_s'] > 0 for row in steps.values())
  (host,) = report['host_time']  # the loop against its program alone, four steps a call
  assert (host['preset'], host['steps_per_call']) == ('vqvc_plus.py:tiny', 4)
  assert host['program_steps_per_s'] > 0 and host['loop_steps_per_s'] > 0, host
  assert host['log_every_steps'] % 4 == 0
  (parts,) = report['host_parts']  # the host's CPU time per part of a step, flat optimizer state
  assert parts['preset'] == 'vqvc_plus.py:tiny+flat_optimizer=True'
  assert all(parts[f'{part}_us'] > 0 for part in ('draw', 'augment', 'place', 'dispatch')), parts
  loop = report['loop']
  assert loop['status'] == 'preempted' and loop['steps'] > 0 and loop['steps_per_s'] > 0, loop
  conversion = report['conversion']
  assert 0 < conversion['rtf_model'] < conversion['rtf_with_griffin_lim']
  assert conversion['rtf_with_melgan'] > conversion['rtf_model']
  try:
    import torch  # noqa: F401
  except ImportError:
    assert report['gru'] is None
  else:
    assert report['gru'][0]['ours_ms'] > 0 and report['gru'][0]['torch_ms'] > 0


def test_the_pause_benchmark_compares_the_cadences(small_features, tmp_path):
  out = tmp_path / 'pauses.json'
  as_set, sized = _benchmark(
    'pauses.py',
    out,
    f'--features={small_features / "train"}',
    '--presets=vqvc_plus.py:tiny',
    f'--flag=--config.data.test_dir={small_features / "test"}',
    # A step count, not wall time: 15 s and later 30 s ended CI runs on a busy machine inside
    # compilation, before any rate was measured.
    '--steps=240',
    '--seconds=500',
    '--flag=--config.eval_every_steps=20',
    timeout=600,
  )
  assert (as_set['eval_every_steps'], as_set['checkpoint_every_steps']) == (20, 4)
  # Sizing only ever lengthens a period (by a whole multiple).
  assert sized['eval_every_steps'] % 20 == 0 and sized['checkpoint_every_steps'] % 4 == 0
  for row in (as_set, sized):
    assert row['steps'] > 0 and 0 < row['overall'] <= row['between'] * 1.05, row
  # A checkpoint every 4 tiny steps costs most of the time on a quiet machine: its period grows and
  # the sized periods give the time back. (On a machine busy enough that the step itself slows more
  # than the checkpoint, the checkpoints' share can stay under the bound and the periods as set.)
  if sized['checkpoint_every_steps'] > 4:
    assert sized['training_share'] > as_set['training_share'], (as_set, sized)


def test_the_budget_curve_evaluates_the_checkpoints_nearest_each_mark(small_features, tmp_path):
  run = tmp_path / 'run'
  loop.train_and_evaluate(
    tiny_config(small_features, num_train_steps=4, checkpoint_every_steps=2), str(run)
  )
  out = tmp_path / 'curve.json'
  rows = _benchmark(
    'budget_curve.py', out, f'--workdir={run}', '--minutes=0,1000', '--eval_pairs=2', timeout=900
  )
  assert [r['step'] for r in rows] == [2, 4]  # the first checkpoint nearest 0, the last 1000
  assert rows[0]['minutes'] <= rows[1]['minutes'] and rows[1]['lmcd_db'] > 0
  for r in rows:
    metrics = json.loads((run / 'eval' / f'step_{r["step"]}' / 'metrics.json').read_text())
    assert r['lmcd_db'] == metrics['conversion']['lmcd_dtw_db']
    assert r['wer'] == ((metrics.get('intelligibility') or {}).get('wer') or {})
    assert r['easy_pairs'] <= 2
