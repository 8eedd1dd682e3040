"""Audio corpus -> features: the arrow audio -> features of the data path (`preprocess.py`).

The output folder is one consistent set, whatever happened to it before: features are kept only while
their parameters, split side and source still match (a speaker moved to the other side has its features
moved; features whose audio is gone or changed, or that cannot be read, are removed or redone), and the
manifest always describes exactly what is there. A run records its parameters before it writes any
feature, so an interrupted run cannot be continued with other parameters.
"""

from __future__ import annotations

import dataclasses
import errno
import os
from collections.abc import Callable, Sequence

import numpy as np
from absl import logging

from skipvqvc_jax.core import deadlines, errors, locks, storage
from skipvqvc_jax.core.errors import AudioError, CorpusError
from skipvqvc_jax.core.fileio import load_json, save_json, save_npy
from skipvqvc_jax.core.workers import map_files
from skipvqvc_jax.data import audio, corpus, f0, f0_files, layouts

STAMP = '.preprocessing.json'  # the parameters of the run writing the folder, until its manifest is


def _featurise(task):
  """Worker: one audio file -> one .npy. Returns a result dict; never raises for bad audio."""
  source_path, out_path, params, min_frames = task
  try:
    if os.path.getsize(source_path) == 0:
      raise AudioError('empty file (0 bytes)')
    y, index = audio.trim(audio.load(source_path, params), params)
    mel = audio.log_mel(y, params)
  except (AudioError, OSError) as e:
    return dict(ok=False, reason=str(e))
  if mel.shape[1] < min_frames:
    return dict(ok=False, reason=f'too short: {mel.shape[1]} frames < --min_frames={min_frames}')
  if not np.isfinite(mel).all():  # never written: a NaN feature would stop training steps later
    return dict(ok=False, reason='its features are not finite (NaN or inf)')
  try:
    save_npy(out_path, mel)
  except OSError as e:  # the output's disk, not the audio: every other file would fail the same way
    return dict(
      ok=False,
      fatal=f'cannot write {out_path}: {e.strerror or e}'
      + (
        '; free some space and rerun (the features made so far are kept)'
        if e.errno == errno.ENOSPC
        else '; once it can be written, the same command continues (what was made is kept)'
      ),
    )
  return dict(ok=True, frames=int(mel.shape[1]), trim=list(index))


def _source_key(path: str) -> list:
  st = os.stat(path)
  return [st.st_size, st.st_mtime_ns]


def _check_parameters(output_dir: str, params: audio.FeatureParams) -> None:
  """Refuses an output folder whose features (finished or not) were made with other parameters."""
  for name in (corpus.MANIFEST, STAMP):
    path = storage.join(output_dir, name)
    if storage.exists(path):
      found = audio.FeatureParams.from_dict(load_json(path)['feature_params'])
      if found != params:
        raise CorpusError(
          f'{output_dir} holds features made with other parameters ('
          + '; '.join(found.mismatches(params))
          + '); use a new output dir'
        )


def _tidy(output_dir: str, expected: dict[str, str], log) -> None:
  """Makes the feature files on disk a subset of `expected` ({feature file: its split side}):
  features of a speaker whose side changed are moved; files no utterance makes any more, and the
  temporary files of killed writers, are removed."""
  moved = removed = 0
  for side in corpus.SPLITS:
    folder = storage.join(output_dir, side)
    if not storage.isdir(folder):
      continue
    for name in sorted(storage.listdir(folder)):
      path = storage.join(folder, name)
      if name.startswith('.') and name.endswith('.tmp'):
        storage.remove(path)
      elif name.endswith('.npy') and expected.get(name) != side:
        moved_to = storage.join(output_dir, expected.get(name, side), name)
        if name in expected and not storage.exists(moved_to):
          storage.makedirs(storage.dirname(moved_to))
          storage.rename(path, moved_to)
          moved += 1
        else:
          storage.remove(path)
          removed += 1
  if moved or removed:
    log(
      f'{moved} features moved to the other side of the split, {removed} removed (their audio '
      f'is gone, or its speaker is in the other side already)'
    )


def preprocess(
  input_dir: str,
  output_dir: str,
  params: audio.FeatureParams = audio.FeatureParams(),
  *,
  min_frames: int = 100,
  test_speakers: Sequence[str] | None = None,
  num_test_speakers: int | None = None,
  seed: int = 0,
  workers: int | None = None,
  progress: bool = True,
  log: Callable[[str], None] = print,
  layout: layouts.Options = layouts.Options(),
  f0_params=None,
) -> dict:
  """Audio corpus -> features, split, statistics and manifest. Returns the manifest.

  Resumable: features already on disk are kept while they still match, and files skipped by an
  earlier run are not decoded again while unchanged. Raises CorpusError when the input is missing,
  nothing usable came out, or the output folder holds features made with other parameters. With
  `f0_params` (an `f0.F0Params`), or when the folder has F0 already, F0 is made beside the features
  (`data.f0_files`).
  """
  log = _printable_lines(log)
  storage.check_reachable(output_dir)
  if storage.isfile(output_dir):
    raise CorpusError(f'output {output_dir} is a file, not a folder: choose another output dir')
  # One run per output folder: two at once (say, with different --test_speakers) would mix their
  # splits and leave a manifest that contradicts the disk.
  found = corpus.find_utterances(input_dir, layout)  # a bad input: nothing made
  run = _Run(input_dir, output_dir, params, min_frames, workers, progress, log, f0_params)
  with locks.for_workdir(output_dir, elsewhere='write to another output folder'):
    _describe(found, input_dir, log)
    plan = _plan(run, found, test_speakers, num_test_speakers, seed)
    _make(run, plan)
    return _finish(run, plan)


@dataclasses.dataclass
class _Run:
  """One preprocessing run's settings, as `preprocess` was given them."""

  input_dir: str
  output_dir: str
  params: audio.FeatureParams
  min_frames: int
  workers: int | None
  progress: bool
  log: Callable[[str], None]
  f0_params: f0.F0Params | None


@dataclasses.dataclass
class _Plan:
  """What a run will do: the split, the features already made (`items`), the files to process
  (`tasks`, with `pending` their utterances), the skips of earlier runs kept (`carried`)."""

  layout: layouts.Layout
  split: dict
  items: list = dataclasses.field(default_factory=list)
  skipped: list = dataclasses.field(default_factory=list)
  tasks: list = dataclasses.field(default_factory=list)
  pending: list = dataclasses.field(default_factory=list)
  carried: list = dataclasses.field(default_factory=list)


def _describe(found, input_dir: str, log) -> None:
  """The lines that say what corpus was found: its layout, speakers, utterances, transcripts, and the
  speaker folders whose names change in feature names."""
  utterances, _, layout = found
  log(
    f'{input_dir}: {layout.name} layout, {len({u.speaker for u in utterances})} speakers, '
    f'{len(utterances)} utterances'
    + (f' ({layout.mic} files)' if layout.mic else '')
    + (
      f', {sum(u.transcript is not None for u in utterances)} with transcripts'
      if layout.name != 'flat'
      else ''
    )
  )
  folders = {layouts.speaker_folder(u.source, layout) for u in utterances}
  renamed = sorted(f for f in folders if f != corpus.speaker_name(f))
  if renamed:
    log(
      'speaker folders renamed in feature names (_ separates speaker from utterance): '
      + ', '.join(f'{f} -> {corpus.speaker_name(f)}' for f in renamed)
    )


def _plan(run: _Run, found, test_speakers, num_test_speakers, seed) -> _Plan:
  """Checks the output folder against the run, fixes the split, records the run's parameters, tidies
  the folder to the split, and sorts the utterances into made, to make, and skipped before."""
  utterances, skipped, layout = found
  if test_speakers is not None:
    test_speakers = [corpus.speaker_name(s) for s in test_speakers]
  output_dir = run.output_dir
  storage.makedirs(output_dir)
  _check_parameters(output_dir, run.params)
  manifest_path = storage.join(output_dir, corpus.MANIFEST)
  old = load_json(manifest_path) if storage.exists(manifest_path) else {}
  f0_files.check_params(old, run.f0_params, output_dir)
  if run.f0_params is None and old.get('f0_params'):  # the folder has F0: kept up to date
    run.f0_params = f0.F0Params.from_dict(old['f0_params'])
  speakers = [u.speaker for u in utterances]
  split = (
    corpus.resolve_split(output_dir, speakers, test_speakers, num_test_speakers, seed)
    if utterances
    else dict(train=[], test=[])
  )
  if len(split['test']) == 1:
    run.log(f'only one test speaker ({split["test"][0]}): --mode=eval needs two to convert between')
  side = {s: 'train' for s in split['train']} | {s: 'test' for s in split['test']}
  save_json(
    storage.join(output_dir, STAMP),
    dict(feature_params=run.params.to_dict(), min_frames=run.min_frames),
  )
  _tidy(output_dir, {u.feature_file: side[u.speaker] for u in utterances}, run.log)
  plan = _Plan(layout, split, skipped=list(skipped))
  _sort_utterances(run, plan, utterances, side, old)
  return plan


def _sort_utterances(run: _Run, plan: _Plan, utterances, side: dict, old: dict) -> None:
  """Each utterance into the plan: made (its feature is readable and its source unchanged), skipped
  before (unchanged since), or to make (new, changed, or its feature unreadable)."""
  known_skips = {s['source']: s for s in old.get('skipped', []) if 'key' in s}
  known_items = {i['source']: i for i in old.get('items', [])}
  on_disk = {  # one listing per side (one request each in a bucket), not one query per file
    os.path.join(side_name, name)
    for side_name in corpus.SPLITS
    if storage.isdir(storage.join(run.output_dir, side_name))
    for name in storage.listdir(storage.join(run.output_dir, side_name))
  }
  for utt in utterances:
    source_path = os.path.join(plan.layout.root, utt.source)
    out_rel = os.path.join(side[utt.speaker], utt.feature_file)
    out_path = storage.join(run.output_dir, *out_rel.split(os.sep))
    key = _source_key(source_path)
    previous = known_items.get(utt.source, {})
    frames = corpus.readable_frames(out_path, run.params.n_mels) if out_rel in on_disk else None
    if frames is not None and previous.get('key', key) == key:
      plan.items.append(_item(utt, out_rel, frames, previous.get('trim'), key))
    elif frames is None and utt.source in known_skips and known_skips[utt.source]['key'] == key:
      plan.carried.append(known_skips[utt.source])
    else:
      plan.tasks.append((source_path, out_path, run.params, run.min_frames))
      plan.pending.append((utt, out_rel, key))
  if plan.items or known_skips:
    run.log(f'{len(plan.items)} features already made, {len(plan.tasks)} files to process')


def _make(run: _Run, plan: _Plan) -> None:
  """The plan's features, made by the workers; whatever stops them, the manifest then says what is
  there (and that it is not finished)."""
  try:
    made = map_files(_featurise, plan.tasks, run.workers, run.progress, run.log, 'preprocessing')
    for (utt, out_rel, key), result in zip(plan.pending, made):
      if 'fatal' in result:
        raise CorpusError(result['fatal'])
      if result['ok']:
        plan.items.append(_item(utt, out_rel, result['frames'], result['trim'], key))
      else:
        plan.skipped.append(dict(source=utt.source, reason=result['reason'], key=key))
  except BaseException:
    # Including features whose results were still on their way back from the workers: within half
    # a minute, as the storage that stopped the run may not answer (a bucket's server gone).
    record = lambda: _record_unfinished(run, plan)
    try:
      deadlines.bounded(record, f'the manifest of {run.output_dir}', 30, 'it is left as it was')
    except Exception as e:  # pylint: disable=broad-except  (the error that stopped the run wins)
      logging.info('could not record what was made in %s (%s)', run.output_dir, e)
    raise
  for s in plan.skipped:
    run.log(f'skipped {s["source"]}: {s["reason"]}')


def _finish(run: _Run, plan: _Plan) -> dict:
  """F0 beside the features (when asked for, or the folder has it), the split, the statistics and
  the manifest, written last; returns the manifest."""
  skipped = plan.skipped + plan.carried  # the carried ones were reported by the run that found them
  items = sorted(plan.items, key=lambda i: i['file'])
  if not items:
    raise CorpusError(
      f'no usable audio in {run.input_dir}: {len(skipped)} files skipped (see the reasons above)'
    )
  output_dir, f0_params = run.output_dir, run.f0_params
  if f0_params is not None:
    skipped += f0_files.make(
      output_dir,
      items,
      plan.layout.root,
      run.params,
      f0_params,
      workers=run.workers,
      progress=run.progress,
      log=run.log,
    )
  save_json(storage.join(output_dir, corpus.SPLIT_FILE), plan.split)
  corpus.write_stats(
    output_dir, [i['file'] for i in items if i['file'].startswith('train' + os.sep)]
  )
  manifest = corpus.manifest(
    run.input_dir, run.params, run.min_frames, plan.split, items, skipped, layout=plan.layout
  )
  if f0_params is not None:
    manifest['f0_params'] = f0_params.to_dict()
  save_json(storage.join(output_dir, corpus.MANIFEST), manifest)
  storage.remove(storage.join(output_dir, STAMP))
  return manifest


def _item(utt: corpus.Utterance, out_rel: str, frames: int, trim, key) -> dict:
  """A manifest item: the feature file, its source, speaker, frames, trim range, source key and,
  where the corpus has one, its transcript."""
  item = dict(
    file=out_rel, source=utt.source, speaker=utt.speaker, frames=frames, trim=trim, key=key
  )
  if utt.transcript is not None:
    item['transcript'] = utt.transcript
  return item


def _printable_lines(log):
  return lambda line: log(errors.printable(line))


def _record_unfinished(run: _Run, plan: _Plan) -> None:
  """The manifest of a run that stopped: every feature on disk (those whose results never came back
  from the workers too), marked not complete."""
  made = {i['file'] for i in plan.items}
  items = list(plan.items)
  for utt, out_rel, key in plan.pending:
    path = storage.join(run.output_dir, *out_rel.split(os.sep))
    frames = corpus.readable_frames(path, run.params.n_mels)
    if out_rel not in made and frames is not None:
      items.append(_item(utt, out_rel, frames, None, key))
  items.sort(key=lambda i: i['file'])
  skipped = plan.skipped + plan.carried
  manifest = corpus.manifest(
    run.input_dir,
    run.params,
    run.min_frames,
    plan.split,
    items,
    skipped,
    complete=False,
    layout=plan.layout,
  )
  save_json(storage.join(run.output_dir, corpus.MANIFEST), manifest)
