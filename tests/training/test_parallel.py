"""Data parallelism: 4 simulated devices, and a real 2-process jax.distributed run resumed on 2 then 1
devices, match 1 device."""

import json
import os
import re
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from skipvqvc_jax.core.errors import TrainingError
from skipvqvc_jax.store import checkpoints
from skipvqvc_jax.training import loop
from tests.conftest import REPO, devices_env, main_flags, run_in_repo, tiny_config

STEPS = 6


def _env(devices):
  return devices_env(devices)


def _losses_of(summary):
  return np.array([summary['train_losses'][str(s)] for s in range(1, STEPS + 1)])


def _losses(workdir):
  return _losses_of(json.load(open(os.path.join(workdir, 'train_summary.json'))))


def _params(workdir):
  return jax.tree.leaves(nnx.to_pure_dict(nnx.state(checkpoints.load(str(workdir)), nnx.Param)))


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def single(small_features, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('single')
  assert jax.device_count() == 1
  loop.train_and_evaluate(tiny_config(small_features, num_train_steps=STEPS), str(workdir))
  return workdir


def test_four_devices_give_the_same_loss_curve(single, small_features, tmp_path):
  workdir = tmp_path / 'four'
  result = run_in_repo(
    [sys.executable, 'main.py', *main_flags(small_features, workdir, num_train_steps=STEPS)],
    env=_env(4),
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert '4 devices' in result.stderr or 'CpuDevice(id=3)' in result.stderr
  np.testing.assert_allclose(_losses(workdir), _losses(single), atol=1e-5, rtol=0)
  for a, b in zip(_params(workdir), _params(single)):
    np.testing.assert_allclose(a, b, atol=1e-4)


def _two_processes(flags):
  """main.py with `flags` as two processes of two devices each; their outputs."""
  port = _free_port()
  # Process 0 is told the coordinator by flag, process 1 by JAX_COORDINATOR_ADDRESS (pod launchers).
  coordinator = [[f'--coordinator_address=localhost:{port}'], []]
  env = [_env(2), dict(_env(2), JAX_COORDINATOR_ADDRESS=f'localhost:{port}')]
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        'main.py',
        *flags,
        *coordinator[p],
        '--num_processes=2',
        f'--process_id={p}',
      ],
      cwd=REPO,
      env=env[p],
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for p in range(2)
  ]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  return outs


def test_a_pod_run_that_resumes_on_fewer_devices_matches_the_single_process_run(
  single, small_features, tmp_path
):
  """Two processes of two devices (a pod), then 2 devices, then 1 (a preempted slice that comes back
  smaller): the same batches, so the same losses and parameters as the one-device run; a resume that
  would change the global batch is refused in one line that says what to set."""
  workdir = tmp_path / 'resized'
  # Pauses measured from step 1 to 2: the periods they decide must be process 0's in both, or the processes
  # would checkpoint (a collective) at different steps.
  pauses = dict(pause_fraction=0.1, eval_every_steps=1, checkpoint_every_steps=1)
  outs = _two_processes(main_flags(small_features, workdir, num_train_steps=3, **pauses))
  # Both processes see all four devices (process 1's are numbered from 2048).
  assert 'JAX process 1/2' in outs[1] and 'CpuDevice(id=2049)' in outs[0]
  decided = [
    re.search(r'evaluating every (\d+) and checkpointing every (\d+) steps', out) for out in outs
  ]
  assert all(decided) and decided[0].groups() == decided[1].groups(), outs
  summary = json.load(open(workdir / 'train_summary.json'))
  single_summary = json.load(open(single / 'train_summary.json'))
  result = run_in_repo(
    [sys.executable, 'main.py', *main_flags(small_features, workdir, num_train_steps=4)],
    env=_env(2),
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'CpuDevice(id=1)' in result.stderr
  summary['train_losses'].update(json.load(open(workdir / 'train_summary.json'))['train_losses'])
  # The last leg on this process's one device (its step is compiled already, for `single`).
  loop.train_and_evaluate(tiny_config(small_features, num_train_steps=STEPS), str(workdir))
  summary['train_losses'].update(json.load(open(workdir / 'train_summary.json'))['train_losses'])
  np.testing.assert_allclose(_losses_of(summary), _losses_of(single_summary), atol=1e-5, rtol=0)
  for a, b in zip(_params(workdir), _params(single)):
    np.testing.assert_allclose(a, b, atol=1e-4)

  # tiny's global batch is 4: 2 per device on this one device would make it 2.
  config = tiny_config(small_features, num_train_steps=STEPS + 2, per_device_batch_size=2)
  with pytest.raises(TrainingError) as refused:
    loop.train_and_evaluate(config, str(workdir))
  message = str(refused.value)
  assert 'global batch of 4' in message and '--config.batch_size=4' in message, message
  assert '--config.per_device_batch_size=4' in message and '\n' not in message
  assert checkpoints.latest_step(str(workdir)) == STEPS  # nothing trained, nothing moved


def test_a_missing_peer_is_said_at_once_and_ends_in_one_line(small_features, tmp_path):
  """Process 0 of 2 started alone: it says at once what it waits for (was: 5 silent minutes, then a
  fatal abort, exit 134), and after --join_timeout ends with one `error:` line and exit 1."""
  import time

  port = _free_port()
  start = time.time()
  result = run_in_repo(
    [
      sys.executable,
      'main.py',
      *main_flags(small_features, tmp_path / 'w', num_train_steps=2),
      f'--coordinator_address=localhost:{port}',
      '--num_processes=2',
      '--process_id=0',
      '--join_timeout=4',
    ],
    env=_env(1),
    timeout=300,
  )
  took = time.time() - start
  assert result.returncode == 1, result.stderr[-3000:]
  assert f'waiting for 2 processes to join at coordinator localhost:{port}' in result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1 and 'within 4 s (--join_timeout)' in errors[0], result.stderr[-3000:]
  assert took < 120  # the timeout, not JAX's five minutes
  assert not (tmp_path / 'w').exists()  # nothing written
