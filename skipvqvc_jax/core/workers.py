"""Work over many files in worker processes, with progress, that stops cleanly however it is stopped:
what preprocessing, F0 estimation and the vocoder's waveform cache run their files through."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable

from skipvqvc_jax.core.errors import CorpusError
from skipvqvc_jax.core.progress import Progress


def map_files(
  work: Callable[[tuple], dict],
  tasks: list,
  workers: int | None,
  progress: bool,
  log: Callable[[str], None] | None = None,
  what: str = 'files',
) -> Iterable[dict]:
  """Results of `work` (a picklable function of one task) in task order, over `workers` processes.

  progress=True shows a terminal progress bar; otherwise, given `log`, a line every 10 seconds. A
  worker that dies (the out-of-memory killer, a signal) stops the run with a CorpusError instead of
  leaving it waiting forever for that worker's results."""
  import tqdm  # pylint: disable=import-outside-toplevel  (slow to import; only here)

  workers = min(workers or os.cpu_count() or 1, max(len(tasks), 1))
  bar = tqdm.tqdm(total=len(tasks), unit='file', disable=not progress or not tasks)
  lines = Progress(what, len(tasks), log, unit='files') if log and not progress and tasks else None

  done = [0]

  def advance():
    done[0] += 1
    bar.update()
    if lines:
      lines.update()

  # Counted before each result is handed over: a consumer zipping the results stops at the last one.
  if workers <= 1:
    for task in tasks:
      result = work(task)
      advance()
      yield result
  else:
    pool = concurrent.futures.ProcessPoolExecutor(
      workers,
      mp_context=multiprocessing.get_context('spawn'),
      initializer=_worker_start,
      initargs=(os.getpid(),),
    )
    try:
      for result in pool.map(work, tasks, chunksize=4):
        advance()
        yield result
    except concurrent.futures.process.BrokenProcessPool:
      raise CorpusError(
        f'{what}: a worker process died (killed by the system: out of memory?) '
        f'after {done[0]} of {len(tasks)} files; rerun to continue (finished files '
        f'are kept), with fewer --workers if memory is short'
      ) from None
    finally:
      # Stopped early (Ctrl-C, SIGTERM, an error): the queued files are dropped and the workers end
      # now, instead of finishing every file already handed to the pool.
      workers_left = list(getattr(pool, '_processes', {}).values())
      pool.shutdown(wait=False, cancel_futures=True)
      for process in workers_left:
        process.terminate()
  bar.close()


def _worker_start(parent_pid: int) -> None:
  """A worker leaves Ctrl-C to its parent (which stops the pool in one line) and ends when its parent
  does, however that ends (SIGKILL included): a thread watches the parent's pid."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)

  def watch():
    while os.getppid() == parent_pid:
      time.sleep(0.5)
    os._exit(1)  # pylint: disable=protected-access  (no cleanup: the parent is gone)

  threading.Thread(target=watch, daemon=True).start()
