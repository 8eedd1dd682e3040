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

import importlib.util
import math
import os
import random
from typing import Sequence

import numpy as np
from absl import logging

from skipvqvc_jax import (audio, checkpoints, convert, corpus, input_pipeline, layouts, report,
                          summaries, vocoders)
from skipvqvc_jax.errors import CorpusError
from skipvqvc_jax.fileio import save_json
from skipvqvc_jax.progress import Progress

MCD_COEFFS = 24  # mel-cepstral coefficients c1..c24 (c0, the energy, is left out as usual)


# ---- metrics --------------------------------------------------------------------------------------

def mel_cepstrum(log10_mel: np.ndarray, coeffs: int = MCD_COEFFS) -> np.ndarray:
  """(frames, coeffs) mel-cepstra c1..c_coeffs of a log10 mel-amplitude spectrogram.

  c_d = (2 / N) sum_k ln S_k cos(pi d (k + 1/2) / N) over the N mel bands: the cosine series with
  ln S(w) ~ c_0 + 2 sum_d c_d cos(d w) on the mel-warped axis, the scale of SPTK mel-cepstra that the
  MCD formula assumes (an orthonormal DCT would inflate it by sqrt(N / 2)).
  """
  import scipy.fft  # pylint: disable=import-outside-toplevel
  log_mel = np.log(10.0) * np.asarray(log10_mel, np.float64)
  cep = scipy.fft.dct(log_mel, type=2, norm=None, axis=0) / log_mel.shape[0]  # (2/N) sum cos
  return cep[1:coeffs + 1].T


def cepstral_distortion_dtw(a: np.ndarray, b: np.ndarray) -> float:
  """(10 / ln 10) sqrt(2 sum_d (a_d - b_d)^2) in dB, averaged over the DTW alignment of two
  (frames, coefficients) cepstra."""
  import librosa  # pylint: disable=import-outside-toplevel
  import scipy.spatial  # pylint: disable=import-outside-toplevel
  cost = scipy.spatial.distance.cdist(a, b)  # (Ta, Tb), never a (Ta, Tb, coefficients) tensor
  _, path = librosa.sequence.dtw(C=cost)
  diff = a[path[:, 0]] - b[path[:, 1]]
  return float(np.mean(10.0 / np.log(10.0) * np.sqrt(2.0 * (diff**2).sum(-1))))


def lmcd_dtw(log10_mel: np.ndarray, reference: np.ndarray) -> float:
  """Log-mel cepstral distortion (dB) between two log-mels: the MCD formula on the cepstrum of the
  80-band log-mel (`mel_cepstrum`), not on a WORLD/SPTK mel-cepstrum; its values are not comparable
  with the MCD of papers (`world_mcd_dtw` is)."""
  return cepstral_distortion_dtw(mel_cepstrum(log10_mel), mel_cepstrum(reference))


WORLD_ALPHA = 0.455  # the all-pass constant of the mel warping at 22050 Hz (SPTK's table)


def world_mel_cepstrum(wave: np.ndarray, sample_rate: int, order: int = MCD_COEFFS) -> np.ndarray:
  """(frames, order) mel-cepstra c1..c_order of a waveform: WORLD analysis (DIO + StoneMask F0,
  CheapTrick envelope, 5 ms frames), then SPTK's sp2mc (alpha 0.455 at 22050 Hz)."""
  import pysptk  # pylint: disable=import-outside-toplevel  (the eval extra)
  import pyworld  # pylint: disable=import-outside-toplevel
  x = np.asarray(wave, np.float64)
  f0, times = pyworld.dio(x, sample_rate, frame_period=5.0)
  f0 = pyworld.stonemask(x, f0, times, sample_rate)
  envelope = pyworld.cheaptrick(x, f0, times, sample_rate)
  return pysptk.sp2mc(envelope, order=order, alpha=WORLD_ALPHA)[:, 1:]


def world_mcd_dtw(wave: np.ndarray, reference: np.ndarray, sample_rate: int) -> float:
  """The mel-cepstral distortion of voice-conversion papers (dB): MCD = (10 / ln 10)
  sqrt(2 sum_{d=1}^{24} (c_d - c'_d)^2) over WORLD/SPTK mel-cepstra, averaged along the frame-wise DTW
  alignment of the two waveforms."""
  return cepstral_distortion_dtw(world_mel_cepstrum(wave, sample_rate),
                                 world_mel_cepstrum(reference, sample_rate))


def world_available() -> bool:
  return all(importlib.util.find_spec(name) for name in ('pysptk', 'pyworld'))


def codebook_metrics(codes_per_scale: Sequence[np.ndarray], sizes: Sequence[int]) -> dict:
  out = {}
  for s, (codes, k) in enumerate(zip(codes_per_scale, sizes)):
    counts = np.bincount(np.concatenate([c.ravel() for c in codes]), minlength=k)
    p = counts / counts.sum()
    nz = p[p > 0]
    out[f'codebook_s{s}'] = dict(size=int(k), used=int((counts > 0).sum()),
                                 usage=float((counts > 0).mean()),
                                 perplexity=float(np.exp(-(nz * np.log(nz)).sum())),
                                 dead_codes=int((counts == 0).sum()))
  return out


def speaker_similarity_encoder():
  """resemblyzer's VoiceEncoder when the eval extra is installed, else None."""
  try:
    from resemblyzer import VoiceEncoder  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  return VoiceEncoder(device='cpu', verbose=False)


# ---- pairs ----------------------------------------------------------------------------------------

def utterance_name(feature_file: str) -> str:
  """The utterance part of `{speaker}_{utterance}.npy`."""
  return os.path.splitext(os.path.basename(feature_file))[0].split('_', 1)[1]


def sentences(files: Sequence[str]) -> dict[str, str]:
  """{file: what it says}: the normalised transcript where the corpus' manifest has one; otherwise
  the utterance name (the demo corpus' speakers read the same numbered sentences; on VCTK only the
  first few dozen numbers are the same text, so its transcripts decide there)."""
  transcripts: dict[str, str] = {}
  for root in {corpus.manifest_root(os.path.dirname(os.path.abspath(f))) for f in files} - {None}:
    for item in corpus.read_manifest(root)['items']:
      if item.get('transcript'):
        transcripts[os.path.basename(item['file'])] = layouts.normalise(item['transcript'])
  return {f: transcripts.get(os.path.basename(f)) or 'utterance ' + utterance_name(f) for f in files}


def choose_pairs(files: Sequence[str], num_pairs: int, seed: int,
                 said: dict[str, str] | None = None) -> list[dict]:
  """A seeded list of conversions: source utterance, target speaker, a reference of another sentence,
  and the target's recording of the source sentence where it exists (`said`: each file's sentence,
  by default its utterance name)."""
  said = said or {f: utterance_name(f) for f in files}
  by_speaker: dict[str, dict[str, str]] = {}
  for f in files:
    by_speaker.setdefault(corpus.speaker_of(f), {}).setdefault(said[f], f)
  speakers = sorted(by_speaker)
  if len(speakers) < 2:
    raise CorpusError('evaluation needs at least two test speakers to convert between')
  rng = random.Random(seed)
  pairs = []
  for _ in range(num_pairs):
    source_speaker, target_speaker = rng.sample(speakers, 2)
    sentence = rng.choice(sorted(by_speaker[source_speaker]))
    others = sorted(u for u in by_speaker[target_speaker] if u != sentence)
    if not others:
      continue
    pairs.append(dict(source=by_speaker[source_speaker][sentence],
                      target_speaker=target_speaker,
                      reference=by_speaker[target_speaker][rng.choice(others)],
                      parallel=by_speaker[target_speaker].get(sentence)))
  return pairs


# ---- the run --------------------------------------------------------------------------------------

def run(workdir: str, step: int | None = None, vocoder: str = 'griffin_lim', num_pairs: int = 20,
        report_pairs: int = 6, num_vocoder_utterances: int = 8, per_speaker: int = 50) -> dict:
  """Evaluates the checkpoint (default: latest) of `workdir`, as its own config.json describes it,
  into {workdir}/eval/step_N/; returns the metrics it writes. The speaker statistics use at most
  `per_speaker` test utterances of each speaker (a seeded choice): a VCTK-size test set then
  finishes in minutes."""
  converter = convert.Converter.restore(workdir, step, vocoder)
  cfg = converter.config
  step = checkpoints.latest_step(workdir) if step is None else step
  if not os.path.isdir(cfg.data.test_dir):
    raise CorpusError(f'{cfg.data.test_dir}, the test features {workdir}/config.json names, is gone: '
                      f'preprocess the test speakers there again, or point data.test_dir in '
                      f'config.json at their features')
  files = input_pipeline.list_features(cfg.data.test_dir)
  out_dir = os.path.join(workdir, 'eval', f'step_{step}')
  assets = os.path.join(out_dir, 'assets')
  os.makedirs(assets, exist_ok=True)

  # Reconstruction and codebooks over whole utterances.
  l1, frames, codes = 0.0, 0, [[] for _ in range(converter.model.num_scales)]
  progress = Progress('eval: reconstructing the test utterances', len(files), logging.info)
  for f in files:
    progress.update()
    mel = input_pipeline.load_features(f)
    recon, enc = converter.reconstruct(mel)
    l1 += float(np.abs(recon - mel).sum())
    frames += mel.size
    for s, c in enumerate(enc.codes):
      # Only codes of real frames count, not of the padding.
      codes[s].append(np.asarray(c[0])[:math.ceil(mel.shape[1] / 2 ** (s + 1))])
  metrics: dict = dict(step=step, test_utterances=len(files), recon_l1_logmel=l1 / frames)
  metrics.update(codebook_metrics(codes, [q.num_codes for q in converter.model.quantize]))

  # Conversions.
  pairs = choose_pairs(files, num_pairs, cfg.seed, sentences(files))
  mcd, baseline = [], []
  progress = Progress('eval: converting', len(pairs), logging.info, unit='pairs')
  for pair in pairs:
    progress.update()
    source = input_pipeline.load_features(pair['source'])
    reference = input_pipeline.load_features(pair['reference'])
    # Every decoder scale (one for single-scale models): the report shows a multi-scale model's all.
    pair['converted_scales'] = converter.convert_scales(source, converter.speaker([reference]))
    pair['converted_mel'] = pair['converted_scales'][-1]
    if pair['parallel']:
      truth = input_pipeline.load_features(pair['parallel'])
      pair['lmcd_db'] = lmcd_dtw(pair['converted_mel'], truth)
      pair['baseline_lmcd_db'] = lmcd_dtw(source, truth)
      mcd.append(pair['lmcd_db'])
      baseline.append(pair['baseline_lmcd_db'])
  metrics['conversion'] = dict(
      pairs=len(pairs), parallel_pairs=len(mcd),
      lmcd_dtw_db=float(np.mean(mcd)) if mcd else None,
      baseline_lmcd_dtw_db=float(np.mean(baseline)) if baseline else None)
  metrics['conversion'].update(world_mcd(converter, pairs))
  encoder = speaker_similarity_encoder()
  metrics['speaker_similarity'] = (speaker_similarity(
      speaker_embedder(encoder, converter.vocoder), capped(files, per_speaker, cfg.seed), pairs)
                                   if encoder is not None else dict(
      available=False, why='resemblyzer is not installed: pip install -e ".[eval]"'))

  metrics['vocoders'], resynthesis = compare_vocoders(converter, files, num_vocoder_utterances,
                                                      cfg.seed, encoder)

  report.write_report(out_dir, assets, metrics, pairs[:report_pairs], converter,
                      resynthesis if report_pairs else {})
  save_json(os.path.join(out_dir, 'pairs.json'), [
      {k: v for k, v in p.items() if k not in ('converted_mel', 'converted_scales')} for p in pairs])
  save_json(os.path.join(out_dir, 'metrics.json'), metrics)
  report.write_index(os.path.join(workdir, 'eval'))
  writer = summaries.Writer(workdir)
  writer.scalars(step, report.flat(metrics), 'eval/')
  writer.close()
  logging.info('wrote %s', os.path.join(out_dir, 'report.html'))
  return metrics


def world_mcd(converter, pairs: list[dict]) -> dict:
  """With the eval extra: the standard MCD of each parallel pair's converted audio (through the
  converter's vocoder) against the target speaker's real recording, and of the real source against
  it (the baseline). Needs the recordings the features were made from (their manifest's audio)."""
  parallel = [p for p in pairs if p['parallel']]
  if not world_available():
    return dict(mcd_world_dtw_db=None, mcd_world_why='pip install -e ".[eval]" (pyworld, pysptk)')
  sr = converter.vocoder.sample_rate
  real = corpus.source_waveforms(
      sorted({f for p in parallel for f in (p['source'], p['parallel'])}), converter.params)
  scored, baseline = [], []
  for pair in parallel:
    truth, source = real.get(pair['parallel']), real.get(pair['source'])
    if truth is None or source is None:
      continue
    pair['mcd_world_db'] = world_mcd_dtw(converter.vocoder(pair['converted_mel']), truth, sr)
    pair['baseline_mcd_world_db'] = world_mcd_dtw(source, truth, sr)
    scored.append(pair['mcd_world_db'])
    baseline.append(pair['baseline_mcd_world_db'])
  return dict(mcd_world_pairs=len(scored),
              mcd_world_dtw_db=float(np.mean(scored)) if scored else None,
              baseline_mcd_world_dtw_db=float(np.mean(baseline)) if baseline else None)


def capped(files: Sequence[str], per_speaker: int, seed: int) -> list[str]:
  """At most `per_speaker` files of each speaker, a seeded choice, in file order."""
  by_speaker: dict[str, list[str]] = {}
  for f in files:
    by_speaker.setdefault(corpus.speaker_of(f), []).append(f)
  rng = random.Random(seed)
  chosen = {f for group in by_speaker.values()
            for f in (group if len(group) <= per_speaker else rng.sample(group, per_speaker))}
  return [f for f in files if f in chosen]


def equal_error_threshold(same: Sequence[float], different: Sequence[float]) -> tuple[float, float]:
  """(threshold, equal error rate): where rejecting same-speaker and accepting other-speaker scores
  are equally likely. Every distinct score is a candidate threshold; the error rates at all of them
  come from the sorted scores (O(n log n): millions of pairs take a second)."""
  same, different = np.sort(np.asarray(same)), np.sort(np.asarray(different))
  candidates = np.unique(np.concatenate([same, different]))
  false_reject = np.searchsorted(same, candidates, side='left') / len(same)
  false_accept = 1.0 - np.searchsorted(different, candidates, side='left') / len(different)
  i = int(np.argmin(np.abs(false_reject - false_accept)))
  return float(candidates[i]), float((false_reject[i] + false_accept[i]) / 2)


def speaker_embedder(encoder, vocoder):
  """mel -> resemblyzer's unit-length speaker embedding of the mel through `vocoder`.

  Every waveform, real or converted, goes through the same vocoder first, so the speaker encoder
  compares like with like and the threshold is not set by vocoder artefacts."""
  from resemblyzer import preprocess_wav  # pylint: disable=import-outside-toplevel
  return lambda mel: encoder.embed_utterance(preprocess_wav(vocoder(mel),
                                                            source_sr=vocoder.sample_rate))


def speaker_similarity(embed, files: Sequence[str], pairs: list[dict]) -> dict:
  """Cosine similarities of conversions to their target reference and to their source, and the share
  accepted as the target at the EER threshold of the real test utterances `files` (embed: mel ->
  unit-length embedding)."""
  # The statistics' utterances, and the sources and references of the pairs (embedded once each).
  needed = list(dict.fromkeys([*files, *(p[k] for p in pairs for k in ('source', 'reference'))]))
  progress = Progress('eval: speaker embeddings of the test utterances', len(needed), logging.info)
  real = {}
  for f in needed:
    progress.update()
    real[f] = embed(input_pipeline.load_features(f))
  names = sorted(files)
  # Every pair's cosine similarity as one matrix product (the embeddings have unit length).
  embeddings = np.stack([real[f] for f in names]).astype(np.float32)
  scores = embeddings @ embeddings.T
  speakers = np.array([corpus.speaker_of(f) for f in names])
  upper = np.triu(np.ones(scores.shape, bool), k=1)
  same_speaker = speakers[:, None] == speakers[None, :]
  same, different = scores[upper & same_speaker], scores[upper & ~same_speaker]
  threshold, eer = equal_error_threshold(same, different)
  to_target, to_source = [], []
  for pair in pairs:
    converted = embed(pair['converted_mel'])
    pair['similarity_to_target'] = float(converted @ real[pair['reference']])
    pair['similarity_to_source'] = float(converted @ real[pair['source']])
    to_target.append(pair['similarity_to_target'])
    to_source.append(pair['similarity_to_source'])
  return dict(available=True, encoder='resemblyzer VoiceEncoder', utterances=len(files),
              to_target=float(np.mean(to_target)), to_source=float(np.mean(to_source)),
              real_same_speaker=float(np.mean(same)), real_other_speaker=float(np.mean(different)),
              eer_threshold=threshold, real_eer=eer,
              accepted_as_target=float(np.mean(np.asarray(to_target) >= threshold)))


def compare_vocoders(converter, files: Sequence[str], num_utterances: int, seed: int,
                     encoder) -> tuple[dict, dict]:
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
  mels = {f: input_pipeline.load_features(f) for f in chosen}
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
