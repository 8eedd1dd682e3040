"""Defaults shared by every config: the original's training recipe, one comment per field.

`training_defaults()` holds what every task's loop reads (data, steps, logging, checkpoints, seed);
`get_config()` adds the voice-conversion model and trainer; configs/vocoder.py adds a vocoder's.
"""

import ml_collections

from skipvqvc_jax.core.errors import ConfigError
from skipvqvc_jax.data import audio


def training_defaults() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.task = 'voice_conversion'  # voice_conversion | vocoder

  config.data = ml_collections.ConfigDict()
  config.data.train_dir = ''  # training features (.npy), or an audio corpus to preprocess first
  config.data.test_dir = ''  # unseen-speaker features; empty: the test split of train_dir's corpus
  config.data.stats_file = ''  # per-band mean/std for mean_std; empty: stats.npz beside train_dir
  config.data.num_test_speakers = -1  # when preprocessing audio: held-out speakers (-1: a tenth)
  config.data.speaker_depth = 1  # when preprocessing audio: the folder naming speakers (1: the top)
  config.data.mic = 'mic1'  # when preprocessing VCTK 0.92: mic1 | mic2
  # when preprocessing audio for an F0 trainer: harvest | dio (pyworld) | pyin (librosa)
  config.data.f0_method = 'pyin'
  config.data.prefetch = 4  # batches read ahead in background threads

  config.features = ml_collections.ConfigDict(audio.FeatureParams().to_dict())  # as the data's

  config.batch_size = 8  # global batch, split over every device of every process
  # > 0: the global batch is this x the device count instead (batch_size is set from it), so one
  # command fits any slice; a resume must keep the global batch all the same.
  config.per_device_batch_size = 0
  config.num_train_steps = 100_000  # a step budget (the original ran 800 epochs)
  config.learning_rate = 1e-3  # Adam, as the original
  config.lr_schedule = 'constant'  # as the original; or warmup_cosine (tasks/voice_conversion.py)
  config.warmup_steps = 0  # warmup_cosine: linear from 0 to learning_rate over these steps
  config.lr_end_fraction = 0.0  # warmup_cosine: the rate at num_train_steps, x learning_rate
  config.adam_b1 = 0.9
  config.adam_b2 = 0.999
  config.adam_eps = 1e-8
  config.flat_optimizer = False  # Adam's moments as one vector each (tasks/base.py `laid_out`)

  # Steps per call of the jitted program (a scan): one dispatch per call, for an accelerator's tiny
  # step; periods become multiples of it; differing shapes (stretching trainers) go one a call.
  config.steps_per_call = 1
  config.log_every_steps = 5  # train scalars and the console line
  config.eval_every_steps = 200  # test loss, mel images and audio
  config.eval_batches = 4  # test batches per evaluation (fixed, so evaluations compare)
  config.checkpoint_every_steps = 200
  # > 0: evaluation and checkpoints may take at most this share of the wall time: once the first
  # period is timed, both periods above grow to the same whole multiple of themselves that keeps
  # them under it (a fast model on a small machine would otherwise pause every second). 0: as set.
  config.pause_fraction = 0.1
  config.keep_checkpoints = 3  # the last N checkpoints are kept
  # In a bucket, the event file goes on in a new part at this size (a flush uploads a whole part).
  config.tensorboard_part_mib = 1.0
  # Seconds a checkpoint may take to reach the workdir (a bucket that stops answering ends the run
  # with one line after this, saying where a rerun continues; a line every 30 s says it is waiting).
  config.storage_timeout_seconds = 600.0
  # > 0: a jax.profiler trace of this many steps (from the run's second: the first compiles) into
  # {workdir}/tensorboard, for TensorBoard's Profile tab (pip install tensorboard-plugin-profile)
  config.profile_steps = 0

  config.seed = 0  # parameters, data order, crops and noise all derive from it
  config.resume = True  # continue from the workdir's latest checkpoint; False moves it aside
  config.init_from = ''  # a workdir or model directory to take initial parameters from
  config.distributed = (
    False  # call jax.distributed.initialize() (pods; also set by the environment)
  )
  return config


def get_config() -> ml_collections.ConfigDict:
  config = training_defaults()

  config.model = ml_collections.ConfigDict()
  config.model.name = 'vqvc+'  # a name from skipvqvc_jax.models.names()
  config.model.channel = 64  # hidden width of the encoder convs and decoder GBlocks
  config.model.n_embed = 64  # codebook size of the coarsest scale (variants derive the others)
  config.model.gru_init = 'normal'  # GRU initial state: the original's N(0, 1) noise, or 'zeros'
  # Off in the original: the decoder's content is also scaled per channel by the speaker's spread
  # (AdaIN-style; vqvc+, vqvc+_multi, vqvc+_multi_simple)
  config.model.speaker_scale = False
  # > 0, off in the original: a training-only head predicts the finest scale's content this many
  # frames ahead (contrastive, VQ-CPC; models/content_prediction.py), weighted in the loss by
  # content_prediction_weight
  config.model.predict_steps = 0
  # > 0, off in the original: codes are matched in a space of this width, behind a linear map from the
  # stage's own (40/20/10 at 80 mels) and one back (vqvc+, vqvc+_multi, vqvc+_multi_simple)
  config.model.code_dim = 0

  config.trainer = 'normal'  # a name from skipvqvc_jax.training.trainers.NAMES
  # '' trains every parameter; a comma-separated list of top-level groups (dec, enc, quantize) trains
  # only those: 'dec' fine-tunes the decoder to one voice with the encoder and codebooks frozen
  config.trainable = ''
  config.data.crop_frames = 128  # frames per training example

  config.grad_clip_norm = 3.0  # global-norm clipping of the gradient
  config.latent_loss_weight = 0.1  # loss = L1 reconstruction + this * latent loss
  # > 0, off in the original: in training, the encoder's content comes from a copy of each mel
  # resized along frequency by a ratio ~ U(1 - x, 1 + x), the speaker terms from the mel itself
  # (FreeVC's spectrogram-resize augmentation; trainers.resized_reconstruction). Conversion unchanged.
  config.content_resize = 0.0
  config.content_prediction_weight = 0.1  # with model.predict_steps > 0
  # Codebook upkeep from VQ-VAE practice, off as in the original (tasks/codebooks.py):
  config.codebook = ml_collections.ConfigDict()
  # > 0: a code whose usage (moving average) falls under this x the uniform share restarts as a
  # random encoder output of the batch
  config.codebook.restart_below = 0.0
  config.codebook.data_init = (
    False  # every code starts as a random encoder output of the first batch
  )
  config.codebook.usage_decay = 0.99  # of the usage's moving average, per step
  # > 0: codebooks set to moving averages of the encoder outputs each code is chosen for (this
  # decay per step), not trained by the gradient (VQ-VAE's EMA updates)
  config.codebook.ema_decay = 0.0
  config.compute_dtype = 'float32'  # or 'bfloat16' on accelerators; parameters stay float32
  config.vocoder = 'griffin_lim'  # audio in TensorBoard: griffin_lim or a vocoder directory/workdir
  return config


# The presets every family shares the shape of (each file adds its model's fields):
# on the bundled demo corpus, a few minutes on 2 CPU cores;
DEMO_CORPUS = {'data.train_dir': 'data/demo_corpus', 'data.num_test_speakers': 2}
DEMO_RUN = {
  **DEMO_CORPUS,
  'num_train_steps': 3000,
  'log_every_steps': 10,
  'eval_every_steps': 500,
  'checkpoint_every_steps': 500,
  'eval_batches': 2,
}
# big_vision's `runlocal`: a few steps in seconds (the tests' configs).
TINY_RUN = {
  **DEMO_CORPUS,
  'num_train_steps': 8,
  'log_every_steps': 1,
  'eval_every_steps': 1000,
  'checkpoint_every_steps': 4,
  'pause_fraction': 0.0,  # the steps as set: tests count on them
  'eval_batches': 1,
}
# The VQVC+ families' demo and tiny models.
DEMO_VQVC = {**DEMO_RUN, 'model.channel': 32, 'model.n_embed': 32}
TINY_VQVC = {
  **TINY_RUN,
  'model.channel': 16,
  'model.n_embed': 16,
  'data.crop_frames': 32,
  'batch_size': 4,
}


def from_table(presets: dict, preset: str, base=get_config) -> ml_collections.ConfigDict:
  """`base()` updated with presets[preset]; an unknown preset lists the valid ones."""
  if preset not in presets:
    raise ConfigError(f'unknown preset {preset!r}; valid presets: {", ".join(presets)}')
  config = base()
  config.update_from_flattened_dict(presets[preset])
  return config
