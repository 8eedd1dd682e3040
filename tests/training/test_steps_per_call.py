"""`steps_per_call`: k optimizer steps in one call of the loop's program give the losses, parameters and
data position of k single calls; the non-finite guard, read at log steps only, still stops a run on
its last good state with one line."""

import json
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from skipvqvc_jax.core import errors, fileio
from skipvqvc_jax.store import checkpoints
from skipvqvc_jax.training import feed, input_pipeline, loop, sharding, tasks
from tests.conftest import tiny_config

STEPS = 8


def _run(features, workdir, **overrides):
  config = tiny_config(features, **{'num_train_steps': STEPS, **overrides})
  return loop.train_and_evaluate(config, str(workdir))


def _params(workdir):
  return jax.tree.leaves(nnx.to_pure_dict(nnx.state(checkpoints.load(str(workdir)), nnx.Param)))


def _losses(workdir):
  return json.load(open(workdir / 'train_summary.json'))['train_losses']


@pytest.fixture(scope='module')
def one_a_call(small_features, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('one')
  _run(small_features, workdir)
  return workdir


def test_four_steps_a_call_equal_four_single_calls_and_resume_exactly(
  one_a_call, small_features, tmp_path
):
  whole = tmp_path / 'whole'
  summary = _run(small_features, whole, steps_per_call=4)
  # The periods (log 1, checkpoint 4) become multiples of 4: the loop looks between calls only.
  assert summary['cadence']['log_every_steps'] == 4
  assert summary['compiles'] == 1  # two calls of four steps: one program
  assert sorted(_losses(whole), key=int) == ['4', '8']
  single = _losses(one_a_call)
  for step, loss in _losses(whole).items():
    np.testing.assert_allclose(loss, single[step], rtol=0, atol=1e-6)
  for a, b in zip(_params(whole), _params(one_a_call)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
  assert checkpoints.latest_step(str(whole)) == STEPS

  # Stopped after one call, then resumed: the same batches, so the same parameters as one run.
  resumed = tmp_path / 'resumed'
  _run(small_features, resumed, steps_per_call=4, num_train_steps=4)
  _run(small_features, resumed, steps_per_call=4)
  for a, b in zip(_params(resumed), _params(whole)):
    np.testing.assert_array_equal(a, b)


def test_a_flat_optimizer_state_trains_the_same_with_a_third_of_the_arrays_and_resumes_as_it_began(
  one_a_call, small_features, tmp_path
):
  """`flat_optimizer`: Adam's moments as one vector each; the same losses and parameters to float
  rounding as one array per parameter, a run stopped and resumed included; a workdir refuses the
  other layout in one line."""
  mesh = sharding.make_mesh()
  leaves = {
    flat: len(
      jax.tree.leaves(
        tasks.make(
          tiny_config(small_features, flat_optimizer=flat), str(tmp_path), mesh
        ).initial_state()
      )
    )
    for flat in (False, True)
  }
  assert leaves[True] < leaves[False] / 2.5  # parameters, and two moments for all of them
  flat = tmp_path / 'flat'
  _run(small_features, flat, flat_optimizer=True, num_train_steps=4)
  _run(small_features, flat, flat_optimizer=True)
  single = _losses(one_a_call)
  for step, loss in _losses(flat).items():
    np.testing.assert_allclose(loss, single[step], rtol=0, atol=1e-5)
  for a, b in zip(_params(flat), _params(one_a_call)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
  with pytest.raises(errors.TrainingError) as refused:
    _run(small_features, flat, num_train_steps=12)
  message = str(refused.value)
  assert '--config.flat_optimizer=True (this run: False)' in message and '\n' not in message
  assert checkpoints.latest_step(str(flat)) == STEPS


def test_a_run_that_diverges_stops_at_its_next_log_step_on_its_last_good_state(
  small_features, tmp_path
):
  poisoned = tmp_path / 'poisoned'
  shutil.copytree(small_features, poisoned)
  workdir = tmp_path / 'w'
  _run(poisoned, workdir, num_train_steps=2, checkpoint_every_steps=2)
  # Every training file so large that the next update overflows (finite, so the data checks pass).
  for f in sorted((poisoned / 'train').glob('*.npy')):
    fileio.save_npy(str(f), np.full_like(np.load(f), 3e38))
  # From step 2, steps 3 and 4 go one at a time (calls start at multiples of 4); the guard is read at
  # the log step, 4, and names step 3, the first bad update; nothing after step 2 is saved.
  with pytest.raises(errors.TrainingError) as stopped:
    _run(poisoned, workdir, steps_per_call=4, num_train_steps=12)
  message = str(stopped.value)
  assert 'at step 3: stopping;' in message and 'last good checkpoint is step 2' in message
  assert message.startswith('loss became ') and '\n' not in message
  assert checkpoints.latest_step(str(workdir)) == 2


def test_batches_of_differing_shapes_go_one_step_a_call(small_features, tmp_path):
  """The multi-scale trainers stretch each batch to its own length: a call of four stacks only
  batches of one shape, the rest go one a call; every call carries the data position after it."""
  config = tiny_config(
    small_features, 'vqvc_plus_multi_simple.py:tiny', steps_per_call=4, **{'data.crop_frames': 128}
  )
  mesh = sharding.make_mesh()
  task = tasks.make(config, str(tmp_path), mesh)
  iterator = input_pipeline.make_iterator(task.dataset())
  calls = feed.Feed(task, iterator, mesh, 4, start=0, total=40)
  steps, kinds = 0, set()
  while steps < 40:
    call = calls.take()
    frames = {batch.shape[-1] for batch in np.asarray(call.batches['mel'])}
    assert call.steps in (1, 4) and len(frames) == 1
    assert call.batches['mel'].shape[0] == call.steps
    steps += call.steps
    assert call.position == _position_after(task, steps)
    kinds.add(call.steps)
  assert 1 in kinds  # the stretched lengths differ within a group of four
  assert steps == 40


def _position_after(task, steps):
  """The iterator's state after `steps` batches, read afresh."""
  iterator = input_pipeline.make_iterator(task.dataset())
  for _ in range(steps):
    next(iterator)
  return iterator.get_state()
