"""The contract between the one training loop (`training/loop.py`) and what it trains (`Task`), and the
pieces every task's jitted step shares."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Protocol

import jax
import jax.numpy as jnp
import optax

from skipvqvc_jax.store import checkpoints, summaries
from skipvqvc_jax.training import run_data, sharding


class Task(Protocol):
  """What the loop asks of a task (`voice_conversion.py`, `vocoder.py`).

  A task owns its data, its models, its initial state, the jitted train step, the host-side
  preparation of each batch, evaluation and samples; the loop owns order, checkpoints, logging and
  stopping. States are dicts of arrays with at least `params` and an int32 `step`.
  """

  log_keys: ClassVar[tuple[str, ...]]  # metrics on the console line
  init_ignore: ClassVar[tuple[str, ...]]  # spec entries `init_from` may differ in

  data: run_data.Data  # the resolved feature folders (written to config.json)
  model_spec: dict  # the spec of the model `init_from` must match (`models.build` arguments)
  step: Callable[[dict, dict], tuple[dict, dict]]  # the pure (state, global batch) -> (state,
  # metrics); metrics hold `loss` and `finite` (False: the state was left unchanged). The loop jits it
  # (`jit_train_steps`), several steps a call.
  train_step: Callable[[dict, dict], tuple[dict, dict]]  # `step` jitted alone (`jit_train_step`)

  def __init__(self, config, workdir: str, mesh):
    """Set up to train `config` in `workdir` on `mesh` (reads the data, builds the models)."""

  @staticmethod
  def check_config(config) -> None:
    """One-line errors for the task's settings that cannot work, before anything is read."""

  @staticmethod
  def model_info(config) -> checkpoints.ModelInfo:
    """The workdir's model.json: the inference model's spec and where the train state holds it."""

  @staticmethod
  def default_workdir(config) -> str:
    """Where a run of `config` goes when no --workdir is given (a name that says what it trains)."""

  @staticmethod
  def next_step(program: str, workdir: str) -> str:
    """The `next:` line a finished run ends with: the commands of `program` that use its workdir."""

  @property
  def traces(self) -> int:
    """How many times the train step was traced (compiled)."""

  def initial_state(self, params: dict | None = None) -> dict:
    """The host state at step 0, from `params` of the inference model (init_from) when given."""

  def dataset(self):
    """This process's endless stream of training batches (a grain MapDataset)."""

  def inputs(self, batch: dict, step: int) -> dict:
    """Host-side: batch `step` of the dataset -> this process's share of the step's inputs."""

  def prepare_workdir(self, workdir: str) -> None:
    """Writes what a restore of the workdir needs besides config.json, model.json and checkpoints."""

  def test_metrics(self, state: dict) -> dict:
    """Mean metrics over fixed test batches."""

  def write_samples(self, writer: summaries.Writer, state: dict, step: int) -> None:
    """Mel images and audio to TensorBoard."""


def jit_train_step(step: Callable, mesh) -> Callable:
  """A task's train step (state, global batch) -> (state, metrics), jitted for `mesh`: the state
  replicated, the batch split over `data`, the old state's buffers donated to the new one."""
  replicated, batch = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  return jax.jit(
    step,
    in_shardings=(replicated, batch),
    out_shardings=(replicated, replicated),
    donate_argnums=0,
  )


def initial_health(step: int) -> dict:
  """What the loop's program carries between calls, on the device: the step reached and the first
  non-finite step (-1: none yet) with its loss. (Every update from it on is skipped: the run stops on
  its last good state, so no count is kept.)"""
  return dict(
    step=jnp.asarray(step, jnp.int32),
    first_bad=jnp.full((), -1, jnp.int32),
    bad_loss=jnp.zeros((), jnp.float32),
  )


def _guarded(step: Callable) -> Callable:
  """`step` that also records, on the device, the first non-finite step; from it on it leaves the state
  as it was (the run stops on the last good state at its next log step)."""

  def guarded(state, batch, health):
    new, metrics = step(state, batch)
    healthy = health['first_bad'] < 0
    new = jax.tree.map(lambda n, o: jnp.where(healthy, n, o), new, state)
    step_number = health['step'] + 1
    first = healthy & ~metrics['finite']
    health = dict(
      step=step_number,
      first_bad=jnp.where(first, step_number, health['first_bad']),
      bad_loss=jnp.where(first, metrics['loss'].astype(jnp.float32), health['bad_loss']),
    )
    return new, metrics, health

  return guarded


def laid_out(config, tx: optax.GradientTransformation) -> optax.GradientTransformation:
  """`tx` with its state laid out as `config.flat_optimizer` says. Flat: the moments are one vector
  each (`optax.flatten`) instead of one array per parameter, so the loop's program takes and returns
  about a third as many arrays; handing each over costs the host microseconds per step (on a small
  model, the largest part of a step's host time). The updates are the same to float rounding."""
  return optax.flatten(tx) if config.get('flat_optimizer', False) else tx


def jit_train_steps(step: Callable, mesh) -> Callable:
  """The loop's program: (state, k batches stacked on a leading axis, health) -> (state, the last
  step's metrics, health), k steps of `step` in one call (a scan when k > 1, so the host dispatches
  once per k steps), with `_guarded`'s bookkeeping. Nothing in it waits for the host: the loop reads
  `health` at log steps only. The state's and health's buffers are donated."""
  guarded = _guarded(step)

  def steps(state, batches, health):
    if jax.tree.leaves(batches)[0].shape[0] == 1:  # one step: no loop around it
      return guarded(state, jax.tree.map(lambda b: b[0], batches), health)

    def one(carry, batch):
      state, health = carry
      state, metrics, health = guarded(state, batch, health)
      return (state, health), metrics

    (state, health), metrics = jax.lax.scan(one, (state, health), batches)
    # Every step's metrics come out stacked (a few scalars each): the last step's are the call's.
    return state, jax.tree.map(lambda m: m[-1], metrics), health

  replicated, stacked = sharding.replicated(mesh), sharding.stack_sharded(mesh)
  return jax.jit(
    steps,
    in_shardings=(replicated, stacked, replicated),
    out_shardings=(replicated, replicated, replicated),
    donate_argnums=(0, 2),
  )


def keep_if_finite(finite, new: dict, old: dict) -> dict:
  """The state after a step: `new`'s entries (parameters, optimizer state, anything else a step
  trains) and the next step when `finite`; else `old` unchanged, so a non-finite step changes nothing
  and the loop can stop on the last good state (the jitted form of the guard: both are computed, one
  is selected)."""
  keep = lambda n, o: jax.tree.map(lambda a, b: jnp.where(finite, a, b), n, o)
  return dict(
    old,
    **{name: keep(value, old[name]) for name, value in new.items()},
    step=old['step'] + finite.astype(old['step'].dtype),
  )


# Learning rate per step, for every task: the original's constant, or a linear warm-up to it and a
# cosine decay to `lr_end_fraction` of it at num_train_steps (the horizon: set the steps a budget
# reaches).
LR_SCHEDULES = {
  'constant': lambda config: config.learning_rate,
  'warmup_cosine': lambda config: optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=config.learning_rate,
    warmup_steps=config.warmup_steps,
    decay_steps=max(config.num_train_steps, config.warmup_steps + 1),
    end_value=config.learning_rate * config.lr_end_fraction,
  ),
}


def learning_rate(config):
  """`config.lr_schedule`'s rate: a number or an optax schedule of the step."""
  return LR_SCHEDULES[config.get('lr_schedule', 'constant')](config)
