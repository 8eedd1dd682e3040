"""apps.main, the skipvqvc program, in this process: which mode reads which flag, where a preset file
is found, and the line a run ends with. (Its runs: tests of the loop, conversion and evaluation.)"""

import os
import subprocess
import sys

import pytest
from absl import flags

from skipvqvc_jax.apps import main
from skipvqvc_jax.configs import vocoder, vqvc_plus


def test_every_flag_is_read_by_some_mode():
  """A flag that no mode reads would be accepted and ignored: each is in FLAG_MODES (or applies to
  every mode, COMMON_FLAGS), and every mode named there exists."""
  if 'mode' not in flags.FLAGS:
    main.define_flags()
  defined = {flag.name for flag in flags.FLAGS.get_key_flags_for_module(main.__name__)}
  assert defined - set(main.FLAG_MODES) - set(main.COMMON_FLAGS) == {'mode'}
  assert set(main.FLAG_MODES) <= defined
  assert {m for modes in main.FLAG_MODES.values() for m in modes} == set(main.PROGRAMS)


def test_a_preset_file_is_found_in_the_package_unless_there_is_one_here(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  installed = os.path.join(main.CONFIGS_DIR, 'vqvc_plus.py')
  assert os.path.isfile(installed)
  args = ['skipvqvc', '--config=vqvc_plus.py:demo', '--workdir=w']
  assert main.installed_presets(args) == ['skipvqvc', f'--config={installed}:demo', '--workdir=w']
  (tmp_path / 'configs').mkdir()
  (tmp_path / 'configs' / 'vqvc_plus.py').write_text('')  # the user's own file of that name
  mine = ['--config=configs/vqvc_plus.py:demo']
  assert main.installed_presets(mine) == mine
  assert main.installed_presets(['--config=nowhere/x.py:a']) == ['--config=nowhere/x.py:a']


def test_a_run_ends_with_what_its_task_does_next(monkeypatch):
  monkeypatch.setattr(sys, 'argv', ['/usr/bin/skipvqvc'])
  finished = main.next_steps(vqvc_plus.get_config('tiny'), 'runs/a', 'finished')
  assert finished.startswith('next: evaluate with skipvqvc --mode=eval --model=runs/a ;')
  assert '--mode=convert --model=runs/a' in finished
  heard = main.next_steps(vocoder.get_config('tiny'), 'runs/v', 'finished')
  assert heard.startswith('next: convert through this vocoder') and '--vocoder=runs/v' in heard
  monkeypatch.setattr(sys, 'argv', ['main.py'])
  stopped = main.next_steps(vqvc_plus.get_config('tiny'), 'runs/a', 'preempted')
  assert stopped == 'to continue: run the same command again (python main.py ... --workdir=runs/a)'


@pytest.mark.skipif(
  not os.path.exists(main.JEMALLOC), reason='needs libjemalloc2 (.ci/run installs it)'
)
def test_a_cpu_run_on_glibc_malloc_is_told_to_preload_jemalloc():
  """The hint appears on glibc's allocator only, read from what this process has mapped."""
  ask = 'from skipvqvc_jax.apps import main; print(main.allocator_hint("cpu"))'
  plain = subprocess.run([sys.executable, '-c', ask], capture_output=True, text=True, check=True)
  preloaded = subprocess.run(
    [sys.executable, '-c', ask],
    capture_output=True,
    text=True,
    check=True,
    env={**os.environ, 'LD_PRELOAD': main.JEMALLOC},
  )
  assert plain.stdout.startswith(
    f'hint: this CPU run allocates with glibc; LD_PRELOAD={main.JEMALLOC}'
  )
  assert preloaded.stdout.strip() == 'None'
  assert main.allocator_hint('gpu') is None
