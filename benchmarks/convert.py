"""Real-time factor of conversion on this machine: the model alone, model + Griffin-Lim and model + MelGAN,
for 10 s.

    python benchmarks/convert.py [--preset=vqvc_plus.py:n64_ch64] [--seconds=10] [--repeat=5]

RTF = processing seconds / audio seconds (lower is faster; 0.01 is 100x real time). The model and the
MelGAN generator have random weights (speed does not depend on them). Beside ours, librosa's own inverse (`mel_to_stft`, an NNLS
solve) and `griffinlim` run on the same mel with the same number of iterations; the spectral convergence
of each result's mel against the input mel is printed so speed is compared at equal quality.
"""

import argparse
import os
import time

import numpy as np
from common import DEMO, median_seconds, preset_config, untrained_converter

from skipvqvc_jax.data import audio  # pylint: disable=wrong-import-position
from skipvqvc_jax.models import melgan  # pylint: disable=wrong-import-position
from skipvqvc_jax.vocoders import GriffinLim, NeuralVocoder  # pylint: disable=wrong-import-position


def mel_convergence(wave, log_mel, params):
  rebuilt = audio.mel_basis(params) @ audio.magnitude(wave, params)[:, : log_mel.shape[1]]
  target = 10.0 ** log_mel[:, : rebuilt.shape[1]]
  return float(np.linalg.norm(rebuilt - target) / np.linalg.norm(target))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--preset', default='vqvc_plus.py:n64_ch64')
  parser.add_argument('--seconds', type=float, default=10.0)
  parser.add_argument('--repeat', type=int, default=5)
  parser.add_argument('--iterations', type=int, default=32)
  args = parser.parse_args()
  params = audio.FeatureParams()
  speaker = sorted(os.listdir(DEMO))[0]
  files = sorted(os.listdir(os.path.join(DEMO, speaker)))
  wave = np.concatenate([audio.trim(audio.load(os.path.join(DEMO, speaker, f)))[0] for f in files])
  wave = wave[: int(args.seconds * params.sample_rate)]
  mel = audio.log_mel(wave, params)
  seconds = len(wave) / params.sample_rate

  config = preset_config(args.preset)
  converter = untrained_converter(config)
  reference = converter.speaker([mel[:, :256]])
  model_s = median_seconds(lambda: converter.convert_mel(mel, reference), args.repeat)

  ours = GriffinLim(params, n_iter=args.iterations)
  ours_s = median_seconds(lambda: ours(mel), args.repeat)
  ours_sc = mel_convergence(ours(mel), mel, params)
  generator = NeuralVocoder(melgan.MelGANGenerator())
  melgan_s = median_seconds(lambda: np.asarray(generator(mel)), args.repeat)

  import librosa  # pylint: disable=import-outside-toplevel

  def librosa_vocoder():
    stft = librosa.feature.inverse.mel_to_stft(
      10.0**mel, sr=params.sample_rate, n_fft=params.n_fft, power=1.0
    )
    return librosa.griffinlim(
      stft,
      n_iter=args.iterations,
      hop_length=params.hop_length,
      win_length=params.win_length,
      n_fft=params.n_fft,
      random_state=0,
    )

  librosa_s = median_seconds(librosa_vocoder, max(1, args.repeat // 2))
  librosa_sc = mel_convergence(librosa_vocoder(), mel, params)
  start = time.perf_counter()
  librosa.feature.inverse.mel_to_stft(
    10.0**mel, sr=params.sample_rate, n_fft=params.n_fft, power=1.0
  )
  nnls_s = time.perf_counter() - start

  print(
    f'{seconds:.1f} s of audio ({mel.shape[1]} frames), {args.preset}, '
    f'{os.cpu_count()} cores, median of {args.repeat}'
  )
  print(
    f'model alone (encode source + decode):  {model_s * 1e3:8.1f} ms  RTF {model_s / seconds:.4f}'
  )
  print(
    f'our Griffin-Lim ({args.iterations} it.):           {ours_s * 1e3:8.1f} ms  '
    f'RTF {ours_s / seconds:.4f}  mel spectral convergence {ours_sc:.3f}'
  )
  print(
    f'model + our Griffin-Lim:               {(model_s + ours_s) * 1e3:8.1f} ms  '
    f'RTF {(model_s + ours_s) / seconds:.4f}'
  )
  print(
    f'MelGAN generator:                      {melgan_s * 1e3:8.1f} ms  RTF {melgan_s / seconds:.4f}'
  )
  print(
    f'model + MelGAN:                        {(model_s + melgan_s) * 1e3:8.1f} ms  '
    f'RTF {(model_s + melgan_s) / seconds:.4f}'
  )
  print(
    f'librosa mel_to_stft + griffinlim:      {librosa_s * 1e3:8.1f} ms  '
    f'RTF {librosa_s / seconds:.4f}  mel spectral convergence {librosa_sc:.3f} '
    f'(of it NNLS inverse {nnls_s * 1e3:.0f} ms)'
  )
  print(f"our Griffin-Lim is {librosa_s / ours_s:.1f}x faster than librosa's")


if __name__ == '__main__':
  main()
