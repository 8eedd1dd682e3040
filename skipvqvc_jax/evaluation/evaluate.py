"""`main.py --mode=eval`: measure a checkpoint on the unseen-speaker test set and write a report.

Writes {workdir}/eval/step_N/metrics.json, pairs.json, report.html (with its images and audio in
assets/), eval/index.html over every evaluation, and TensorBoard scalars under eval/. Metrics:
- reconstruction L1 of whole test utterances in raw log-mel units;
- per-scale codebook usage, perplexity and dead codes over every test frame;
- one-shot conversion over a fixed, seeded list of (source utterance, target speaker) pairs: the target
  is given by one reference utterance of another sentence, and where the target speaker also said the
  source's sentence (same transcript, or same utterance name without transcripts), the log-mel
  cepstral distortion (LMCD) with DTW against that recording, next to the no-conversion baseline;
  with the eval extra and the recordings' audio, also the standard WORLD/SPTK mel-cepstral distortion;
- speaker similarity with resemblyzer's pretrained speaker encoder, when it is installed (".[eval]");
- the vocoders: Griffin-Lim and, with --vocoder=DIR, the neural vocoder resynthesise real test
  utterances from their mels; LMCD of the resynthesis' features against the originals (and speaker
  similarity to the real recording, with ".[eval]") says what each vocoder costs before any conversion.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
from collections.abc import Sequence

import numpy as np
from absl import logging

from skipvqvc_jax import models, vocoders
from skipvqvc_jax.core import storage
from skipvqvc_jax.core.errors import CorpusError
from skipvqvc_jax.core.fileio import save_json
from skipvqvc_jax.core.progress import Progress
from skipvqvc_jax.data import audio, corpus, feature_files
from skipvqvc_jax.evaluation import listening, report
from skipvqvc_jax.evaluation.metrics import (
  equal_error_threshold,
  identification,
  lmcd_dtw,
  world_available,
  world_mcd_dtw,
)
from skipvqvc_jax.evaluation.pairs import (
  Pair,
  PairResult,
  capped,
  choose_pairs,
  sentences,
  transcripts,
)
from skipvqvc_jax.inference import convert
from skipvqvc_jax.store import checkpoints, summaries

# ---- metrics ----------------------------------------------------------------------------------------


def codebook_metrics(codes_per_scale: Sequence[Sequence[np.ndarray]], sizes: Sequence[int]) -> dict:
  """Per scale: size, codes used, usage, perplexity and dead codes over every frame given."""
  out = {}
  for s, (codes, k) in enumerate(zip(codes_per_scale, sizes)):
    stats = models.code_statistics(np.concatenate([c.ravel() for c in codes]), k)
    out[f'codebook_s{s}'] = dict(
      size=int(k),
      used=int(stats['used']),
      usage=float(stats['usage']),
      perplexity=float(stats['perplexity']),
      dead_codes=int(k - stats['used']),
    )
  return out


def speaker_similarity_encoder():
  """resemblyzer's VoiceEncoder when the eval extra is installed, else None."""
  try:
    from resemblyzer import VoiceEncoder  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  return VoiceEncoder(device='cpu', verbose=False)


# ---- pairs ----------------------------------------------------------------------------------------

# ---- the run --------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Plan:
  """What an evaluation reads and where it writes."""

  step: int | None  # None: a model directory, which has no steps
  test_dir: str
  out_dir: str
  eval_root: str
  seed: int


def eval_root(source: str, out_root: str = '') -> str:
  """Where the evaluations of `source` go: `out_root` when given, else a run's {workdir}/eval, and a
  model directory's ./<name>-eval (never inside a model directory, which is shared as it is)."""
  if out_root:
    return out_root
  if checkpoints.is_workdir(source):
    return storage.join(source, 'eval')
  return os.path.abspath(f'{os.path.basename(os.path.normpath(source))}-eval')


def _plan(source: str, converter, step, test_dir: str, target: str, out_root: str) -> _Plan:
  if test_dir and not storage.isdir(test_dir):
    raise CorpusError(f'--eval_dir {test_dir}: no such folder of test features')
  root = eval_root(source, out_root)
  if not checkpoints.is_workdir(source):  # a model directory: no config, no steps, no test set
    if not test_dir:
      raise CorpusError(
        f'{source} is a model directory: it names no test speakers; give --eval_dir=FOLDER of '
        f'test features (skipvqvc-preprocess writes them, e.g. FEATURES/test)'
      )
    return _Plan(None, test_dir, storage.join(root, out_name(None, test_dir)), root, 0)
  cfg = converter.config
  if not storage.isdir(test_dir or cfg.data.test_dir):
    raise CorpusError(
      f'{cfg.data.test_dir}, the test features {source}/config.json names, is gone: '
      f'preprocess the test speakers there again, or point data.test_dir in '
      f'config.json at their features'
    )
  step = checkpoints.latest_step(source) if step is None else step
  folder = out_name(step, test_dir, target)
  return _Plan(step, test_dir or cfg.data.test_dir, storage.join(root, folder), root, cfg.seed)


def run(
  workdir: str,
  step: int | None = None,
  vocoder: str = 'griffin_lim',
  num_pairs: int = 20,
  report_pairs: int = 6,
  num_vocoder_utterances: int = 8,
  per_speaker: int = 50,
  test_dir: str = '',
  target: str = '',
  out_root: str = '',
) -> dict:
  """Evaluates the checkpoint (default: latest) of `workdir` on its test speakers (`test_dir`:
  other features), as its own config.json describes it, into {workdir}/eval/step_N/ (`out_name`);
  returns the metrics it writes. A model directory (`skipvqvc-port` writes one) is evaluated on
  `test_dir` into `eval_root`, never inside it. `target`: every conversion goes to that test speaker
  (a model fine-tuned to one voice). The speaker statistics use at most `per_speaker` test
  utterances of each speaker (a seeded choice): a VCTK-size test set then finishes in minutes."""
  converter = convert.Converter.restore(workdir, step, vocoder)
  plan = _plan(workdir, converter, step, test_dir, target, out_root)
  files = feature_files.list_features(plan.test_dir)
  pairs = choose_pairs(files, num_pairs, plan.seed, sentences(files), target=target)
  storage.makedirs(storage.join(plan.out_dir, 'assets'))  # a folder it cannot write: said first
  shown = {p.source for p in pairs[:report_pairs]}  # the report shows their reconstructions
  recon_metrics, reconstructions = reconstruction_metrics(converter, files, keep=shown)
  folder = storage.basename(plan.out_dir)
  metrics: dict = dict(step=plan.step, folder=folder, test_utterances=len(files), **recon_metrics)
  if test_dir or target:
    metrics.update(test_dir=plan.test_dir, target=target or None)
  results = convert_pairs(converter, pairs, reconstructions)
  resynthesis = _measure(
    metrics, converter, results, files, plan.seed, per_speaker, num_vocoder_utterances
  )
  _write(workdir, plan, metrics, results, converter, report_pairs, resynthesis)
  return metrics


def _measure(metrics, converter, results, files, seed, per_speaker, num_vocoder_utterances) -> dict:
  """Adds to `metrics` the figures of the conversions `results`: content and speaker (conversion),
  listening (intelligibility, F0), speaker similarity, and the vocoders compared; returns the
  vocoders' resynthesis for the report."""
  metrics['conversion'] = conversion_metrics(converter, results)
  metrics.update(listening.listen(converter, results, transcripts(files)))
  encoder = speaker_similarity_encoder()
  metrics['speaker_similarity'] = (
    speaker_similarity(
      speaker_embedder(encoder, converter.vocoder), capped(files, per_speaker, seed), results
    )
    if encoder is not None
    else dict(available=False, why='resemblyzer is not installed: pip install -e ".[eval]"')
  )
  metrics['vocoders'], resynthesis = compare_vocoders(
    converter, files, num_vocoder_utterances, seed, encoder
  )
  return resynthesis


def _write(workdir, plan, metrics, results, converter, report_pairs, resynthesis) -> None:
  """The report (its first `report_pairs` conversions shown), pairs.json and metrics.json; for a
  run's checkpoint, the index of its evaluations and the figures in its TensorBoard."""
  report.write_report(
    plan.out_dir,
    storage.join(plan.out_dir, 'assets'),
    metrics,
    results[:report_pairs],
    converter,
    resynthesis if report_pairs else {},
  )
  save_json(storage.join(plan.out_dir, 'pairs.json'), [r.to_json() for r in results])
  save_json(storage.join(plan.out_dir, 'metrics.json'), metrics)
  if plan.step is not None:  # a run's evaluations side by side, and in its TensorBoard
    report.write_index(plan.eval_root)
    writer = summaries.Writer(workdir)
    writer.scalars(plan.step, report.flat(metrics), 'eval/')
    writer.close()
  logging.info('wrote %s', storage.join(plan.out_dir, 'report.html'))


def conversion_metrics(converter, results) -> dict:
  """Distances of the conversions to their targets where the two say the same sentence."""
  parallel = [r for r in results if r.lmcd_db is not None]
  mean = lambda values: float(np.mean(values)) if parallel else None
  metrics = dict(
    pairs=len(results),
    parallel_pairs=len(parallel),
    lmcd_dtw_db=mean([r.lmcd_db for r in parallel]),
    baseline_lmcd_dtw_db=mean([r.baseline_lmcd_db for r in parallel]),
  )
  metrics.update(world_mcd(converter, results))
  return metrics


def out_name(step: int | None, test_dir: str = '', target: str = '') -> str:
  """eval/ folder of an evaluation: step_N (a model directory's: model), with -on-FOLDER for other
  test features and -to-SPEAKER for one target, so that they sit beside the run's own evaluations
  without replacing them."""
  name = 'model' if step is None else f'step_{step}'
  if test_dir:
    name += '-on-' + os.path.basename(os.path.normpath(test_dir))
  if target:
    name += f'-to-{target}'
  return name


def reconstruction_metrics(converter, files: Sequence[str], keep=frozenset()) -> tuple[dict, dict]:
  """(reconstruction L1 in raw log-mel units and codebook statistics over whole utterances, {file:
  every decoder scale of its reconstruction} for the files in `keep`)."""
  l1, frames, codes = 0.0, 0, [[] for _ in range(converter.model.num_scales)]
  kept = {}
  progress = Progress('eval: reconstructing the test utterances', len(files), logging.info)
  for f in files:
    progress.update()
    mel = feature_files.load_features(f)
    scales, enc = converter.reconstruct_scales(mel, converter.source_f0(f))
    if f in keep:
      kept[f] = scales
    l1 += float(np.abs(scales[-1] - mel).sum())
    frames += mel.size
    for s, c in enumerate(enc.codes):
      # Only codes of real frames count, not of the padding.
      codes[s].append(np.asarray(c[0])[: math.ceil(mel.shape[1] / 2 ** (s + 1))])
  metrics = dict(recon_l1_logmel=l1 / frames)
  metrics.update(codebook_metrics(codes, [q.num_codes for q in converter.model.quantize]))
  return metrics, kept


def convert_pairs(converter, pairs: Sequence[Pair], reconstructions: dict) -> list[PairResult]:
  """Every pair converted (each decoder scale: the report shows a multi-scale model's all), with the
  log-mel cepstral distortion to the target's own recording of the sentence where there is one."""
  results = []
  progress = Progress('eval: converting', len(pairs), logging.info, unit='pairs')
  for pair in pairs:
    progress.update()
    source = feature_files.load_features(pair.source)
    reference = feature_files.load_features(pair.reference)
    result = PairResult(
      pair,
      converter.convert_scales(
        source, converter.speaker([reference]), converter.source_f0(pair.source)
      ),
      reconstructions.get(pair.source),
    )
    if pair.parallel:
      truth = feature_files.load_features(pair.parallel)
      result.lmcd_db = lmcd_dtw(result.converted_mel, truth)
      result.baseline_lmcd_db = lmcd_dtw(source, truth)
    results.append(result)
  return results


def world_mcd(converter, results: list[PairResult]) -> dict:
  """With the eval extra: the standard MCD of each parallel pair's converted audio (through the
  converter's vocoder) against the target speaker's real recording, and of the real source against
  it (the baseline). Needs the recordings the features were made from (their manifest's audio)."""
  parallel = [r for r in results if r.pair.parallel]
  if not world_available():
    return dict(mcd_world_dtw_db=None, mcd_world_why='pip install -e ".[eval]" (pyworld, pysptk)')
  sr = converter.vocoder.sample_rate
  real = corpus.source_waveforms(
    sorted({f for r in parallel for f in (r.pair.source, r.pair.parallel)}), converter.params
  )
  scored = []
  for result in parallel:
    truth, source = real.get(result.pair.parallel), real.get(result.pair.source)
    if truth is None or source is None:
      continue
    result.mcd_world_db = world_mcd_dtw(result.converted_audio(converter.vocoder), truth, sr)
    result.baseline_mcd_world_db = world_mcd_dtw(source, truth, sr)
    scored.append(result)
  return dict(
    mcd_world_pairs=len(scored),
    mcd_world_dtw_db=float(np.mean([r.mcd_world_db for r in scored])) if scored else None,
    baseline_mcd_world_dtw_db=(
      float(np.mean([r.baseline_mcd_world_db for r in scored])) if scored else None
    ),
  )


def speaker_embedder(encoder, vocoder):
  """mel -> resemblyzer's unit-length speaker embedding of the mel through `vocoder`.

  Every waveform, real or converted, goes through the same vocoder first, so the speaker encoder
  compares like with like and the threshold is not set by vocoder artefacts."""
  from resemblyzer import preprocess_wav  # pylint: disable=import-outside-toplevel

  return lambda mel: encoder.embed_utterance(
    preprocess_wav(vocoder(mel), source_sr=vocoder.sample_rate)
  )


def speaker_similarity(embed, files: Sequence[str], results: list[PairResult]) -> dict:
  """Cosine similarities of conversions to their target reference and to their source, and the share
  accepted as the target at the EER threshold of the real test utterances `files` (embed: mel ->
  unit-length embedding)."""
  # The statistics' utterances, and the sources and references of the pairs (embedded once each).
  needed = [*files, *(f for r in results for f in (r.pair.source, r.pair.reference))]
  real = _embeddings(embed, list(dict.fromkeys(needed)))
  names = sorted(files)
  # Every pair's cosine similarity as one matrix product (the embeddings have unit length).
  embeddings = np.stack([real[f] for f in names]).astype(np.float32)
  scores = embeddings @ embeddings.T
  speakers = np.array([corpus.speaker_of(f) for f in names])
  upper = np.triu(np.ones(scores.shape, bool), k=1)
  same_speaker = speakers[:, None] == speakers[None, :]
  same, different = scores[upper & same_speaker], scores[upper & ~same_speaker]
  threshold, eer = equal_error_threshold(same, different)
  # Identification among the test speakers: each speaker's centroid embedding; a real utterance is
  # scored against its own speaker's centroid without itself (leave one out).
  names_of = sorted(set(speakers))
  index = {s: i for i, s in enumerate(names_of)}
  sums = np.stack([embeddings[speakers == s].sum(0) for s in names_of])
  counts = np.array([np.sum(speakers == s) for s in names_of])
  centroids = sums / counts[:, None]
  own = np.array([index[s] for s in speakers])
  real_scores = embeddings @ centroids.T
  left_out = (sums[own] - embeddings) / np.maximum(counts[own] - 1, 1)[:, None]
  real_scores[np.arange(len(names)), own] = np.sum(embeddings * left_out, axis=1)
  target_of = np.array([index[corpus.speaker_of(r.pair.reference)] for r in results])
  source_scores = np.stack([real[r.pair.source] for r in results]) @ centroids.T
  for result in results:
    converted = embed(result.converted_mel)
    result.similarity_to_target = float(converted @ real[result.pair.reference])
    result.similarity_to_source = float(converted @ real[result.pair.source])
    result.identified_as_target = bool(
      np.argmax(converted @ centroids.T) == index[corpus.speaker_of(result.pair.reference)]
    )
  to_target = np.array([r.similarity_to_target for r in results])
  return dict(
    available=True,
    encoder='resemblyzer VoiceEncoder',
    utterances=len(files),
    to_target=float(np.mean(to_target)),
    to_source=float(np.mean([r.similarity_to_source for r in results])),
    real_same_speaker=float(np.mean(same)),
    real_other_speaker=float(np.mean(different)),
    eer_threshold=threshold,
    real_eer=eer,
    accepted_as_target=float(np.mean(to_target >= threshold)),
    # The target named among the test speakers: the conversions, the unconverted sources (the
    # baseline), the real utterances' own speakers (the ceiling), and chance.
    speakers=len(names_of),
    identified_as_target=float(np.mean([r.identified_as_target for r in results])),
    source_identified_as_target=identification(source_scores, target_of),
    real_identified=identification(real_scores, own),
    chance=1.0 / len(names_of),
  )


def _embeddings(embed, files: list[str]) -> dict:
  """{feature file: its speaker embedding}, with a progress line."""
  progress = Progress('eval: speaker embeddings of the test utterances', len(files), logging.info)
  real = {}
  for f in files:
    progress.update()
    real[f] = embed(feature_files.load_features(f))
  return real


def compare_vocoders(
  converter, files: Sequence[str], num_utterances: int, seed: int, encoder
) -> tuple[dict, dict]:
  """Griffin-Lim and the converter's vocoder (when neural) on resynthesis of real test utterances.

  Returns (metrics per vocoder, {vocoder: waveform} of the first utterance for the report)."""
  params = converter.params
  neural = converter.vocoder.name != 'griffin_lim'
  candidates = {'griffin_lim': vocoders.get('griffin_lim', params) if neural else converter.vocoder}
  if neural:
    candidates[converter.vocoder.name] = converter.vocoder
  chosen = sorted(random.Random(seed).sample(list(files), min(num_utterances, len(files))))
  if not chosen:
    return dict(utterances=0), {}
  mels = {f: feature_files.load_features(f) for f in chosen}
  real = corpus.source_waveforms(chosen, params)
  real_embeddings = {}
  if encoder is not None:
    from resemblyzer import preprocess_wav  # pylint: disable=import-outside-toplevel

    embed = lambda wave: encoder.embed_utterance(preprocess_wav(wave, source_sr=params.sample_rate))
    real_embeddings = {f: embed(wave) for f, wave in real.items() if wave is not None}
  metrics: dict = dict(utterances=len(chosen))
  first = dict(utterance=os.path.basename(chosen[0]), real=real[chosen[0]])
  for name, vocoder in candidates.items():
    logging.info('eval: resynthesising %d test utterances with %s', len(mels), name)
    mcd, similarity = [], []
    for f, mel in mels.items():
      wave = vocoder(mel)
      mcd.append(lmcd_dtw(audio.log_mel(wave, params), mel))
      if f in real_embeddings:
        similarity.append(float(embed(wave) @ real_embeddings[f]))
      if f == chosen[0]:
        first[name] = wave
    metrics[name] = dict(resynthesis_lmcd_dtw_db=float(np.mean(mcd)))
    if similarity:
      metrics[name]['similarity_to_real'] = float(np.mean(similarity))
  return metrics, first
