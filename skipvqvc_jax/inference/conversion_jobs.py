"""The conversions a command asks for, as (source, targets, output) jobs: from flags, a pairs CSV or a
folder of sources; checked before any model is restored, so a mistake costs no conversion."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence

from skipvqvc_jax.core import storage
from skipvqvc_jax.core.errors import ConversionError
from skipvqvc_jax.core.fileio import save_text
from skipvqvc_jax.data import audio, corpus


def rejoin(pieces: Sequence[str], separator: str) -> list[str]:
  """Paths split at `separator` (the comma of --target=a.wav,b.wav, the ';' of a pairs file's
  targets), put back together where a joined name is an existing file: a file called `a,b.wav` is
  one reference, not two. The longest existing join wins; a piece that joins nothing is a path."""
  out, i = [], 0
  while i < len(pieces):
    j = next(
      (j for j in range(len(pieces), i + 1, -1) if os.path.exists(separator.join(pieces[i:j]))),
      i + 1,
    )
    out.append(separator.join(pieces[i:j]))
    i = j
  return out


def check(
  jobs, output_mel: bool = False, overwrite: bool = False
) -> list[tuple[str, list[str], str]]:
  """The jobs with their final output names, or a ConversionError before anything is converted:
  a source or target that does not exist, an output that is a folder, that would overwrite a source or target, that two jobs share, whose
  extension names no audio format, or that exists already (unless `overwrite`)."""
  checked, writers, existing = [], {}, []
  jobs = [(source, references(targets), output) for source, targets, output in jobs]
  for bucket in {'/'.join(o.split('/')[:3]) for _, _, o in jobs if storage.is_url(o)}:
    storage.check_reachable(bucket)
  for path in dict.fromkeys(p for source, targets, _ in jobs for p in [source, *targets]):
    if not storage.exists(path):  # said now, not after the model's restore
      raise ConversionError(f'{path}: no such file')
  inputs = {os.path.realpath(p) for source, targets, _ in jobs for p in [source, *targets]}
  for source, targets, output in jobs:
    if output_mel:
      output = os.path.splitext(output)[0] + '.npy'
    if storage.isdir(output):
      raise ConversionError(
        f'output {output} is a folder: give a file name (or --source_dir with --output_dir)'
      )
    if not output_mel:
      audio.output_format(output)
    if storage.realpath(output) in inputs:
      raise ConversionError(f'output {output} would overwrite an input audio file: choose another')
    if storage.realpath(output) in writers:
      raise ConversionError(
        f'{writers[storage.realpath(output)]} and {source} would both be written '
        f'to {output}: give them different outputs'
      )
    writers[storage.realpath(output)] = source
    if not overwrite and storage.exists(output):
      existing.append(output)
    checked.append((source, list(targets), output))
  if existing:
    raise ConversionError(
      f'{len(existing)} of the outputs exist already ({", ".join(existing[:3])}'
      f'{", ..." if len(existing) > 3 else ""}): give --overwrite to replace them, or other outputs'
    )
  return checked


def references(targets: Sequence[str]) -> list[str]:
  """The reference files of a target voice: files as given, and each folder as the audio files in it
  (sorted; their voices are averaged as several files are); ConversionError for a folder without
  audio."""
  found = []
  for target in targets:
    if not os.path.isdir(target):
      found.append(target)
      continue
    audio_files = [os.path.join(target, f) for f in _audio_names(target)]
    if not audio_files:
      raise ConversionError(
        f'target {target} is a folder without audio files: give reference recordings of the voice'
      )
    found += audio_files
  return found


def _audio_names(folder: str) -> list[str]:
  """The names of the audio files directly in `folder`, sorted."""
  return sorted(
    f for f in os.listdir(folder) if os.path.splitext(f)[1].lower() in corpus.AUDIO_EXTENSIONS
  )


def read_pairs(path: str) -> list[tuple[str, list[str], str]]:
  """pairs.csv rows `source,target,output` (targets may be several, separated by ';'); a header row
  `source,...` and lines starting with # are skipped. Every row is checked before any is converted."""
  if not os.path.isfile(path):
    raise ConversionError(f'{path}: no such file')
  jobs = []
  with open(path, newline='', encoding='utf-8-sig') as f:  # utf-8-sig: spreadsheets write a BOM
    for line, row in enumerate(csv.reader(f), 1):
      if not row or row[0].startswith('#') or (line == 1 and row[0].strip() == 'source'):
        continue
      if len(row) != 3:
        raise ConversionError(f'{path} line {line}: expected source,target,output; got {row}')
      source, target, output = (x.strip() for x in row)
      targets = [t.strip() for t in rejoin(target.split(';'), ';') if t.strip()]
      for name, value in (('source', source), ('target', targets), ('output', output)):
        if not value:
          raise ConversionError(f'{path} line {line}: the {name} is empty')
      jobs.append((source, targets, output))
  if not jobs:
    raise ConversionError(f'{path}: no source,target,output rows')
  return jobs


def source_dir_jobs(source_dir: str, targets: Sequence[str], output_dir: str, log=print):
  """Every audio file of source_dir converted to `targets`, written as output_dir/<name>.wav (files
  that share a name, like a.ogg and a.wav, as a_ogg.wav and a_wav.wav, said once)."""
  if not os.path.isdir(source_dir):
    raise ConversionError(f'--source_dir {source_dir} does not exist')
  files = _audio_names(source_dir)
  if not files:
    raise ConversionError(f'--source_dir {source_dir} holds no audio files')
  stems = [os.path.splitext(f)[0] for f in files]
  shared = {stem for stem in stems if stems.count(stem) > 1}
  names = [
    f'{stem}_{os.path.splitext(f)[1][1:]}' if stem in shared else stem
    for f, stem in zip(files, stems)
  ]
  if shared:
    log(
      'files sharing a name are written with their extension: '
      + ', '.join(f'{f} -> {n}.wav' for f, n in zip(files, names) if n not in stems)
    )
  return [
    (os.path.join(source_dir, f), list(targets), storage.join(output_dir, n + '.wav'))
    for f, n in zip(files, names)
  ]


INDEX = 'index'  # a batch's index.csv (index-2.csv, ... beside an earlier batch's)
INDEX_FIELDS = ('source', 'references', 'output', 'seconds', 'error')


def _common_folder(outputs: list[str]) -> str:
  """The deepest folder holding every output (a URL's too); the first's when they share none."""
  folders = [storage.dirname(storage.abspath(o)) for o in outputs]
  schemes = {f.split('://', 1)[0] if storage.is_url(f) else '' for f in folders}
  if len(schemes) != 1:
    return folders[0]
  scheme = schemes.pop()
  paths = [f.split('://', 1)[1] if scheme else f for f in folders]
  common = os.path.commonpath(paths)
  return f'{scheme}://{common}' if scheme else common


def write_index(jobs, rows: list[dict]) -> str:
  """A batch's index.csv (one row per job: `INDEX_FIELDS`) in the folder of its outputs, under a
  name no earlier batch's index has there; returns its path."""
  folder = _common_folder([output for _, _, output in jobs])
  path, n = storage.join(folder, f'{INDEX}.csv'), 1
  while storage.exists(path):
    n += 1
    path = storage.join(folder, f'{INDEX}-{n}.csv')
  text = io.StringIO()
  writer = csv.DictWriter(text, INDEX_FIELDS, lineterminator='\n')
  writer.writeheader()
  writer.writerows(rows)
  storage.makedirs(folder)
  save_text(path, text.getvalue())
  return path
