"""Trees of a stored train state as orbax keeps them, and the check that a stored tree is the model's
(a partial restore would otherwise leave missing parameters as they were, silently)."""

from __future__ import annotations

import jax

from skipvqvc_jax.core.errors import CheckpointError


def string_keys(tree):
  return {str(k): string_keys(v) for k, v in tree.items()} if isinstance(tree, dict) else tree


def keys_like(restored, template):
  """`restored` (string keys) with the keys of `template` (which may be integers)."""
  if isinstance(template, dict):
    return {k: keys_like(restored[str(k)], v) for k, v in template.items()}
  return restored


def _shapes(tree) -> dict[str, tuple]:
  """{'/a/b/0': shape} of every array of a nested dict (list indices as strings, as orbax stores)."""
  return {
    '/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path): tuple(leaf.shape)
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def check_fits(stored, abstract, path: str, exact: bool = False) -> None:
  """Refuses a restore whose target's parameters are not what the checkpoint stores (a checkpoint of
  another model, not a damaged one): orbax's partial restore would leave missing ones as they were,
  silently. exact: the stored parameters may not have more either."""
  have = _shapes({k: stored[k] for k in abstract if k in stored})
  want = _shapes(abstract)
  missing = sorted(set(want) - set(have))
  extra = sorted(set(have) - set(want)) if exact else []
  wrong = sorted(k for k in set(want) & set(have) if want[k] != have[k])
  if missing or extra or wrong:
    detail = '; '.join(
      filter(
        None,
        [
          missing and f'{len(missing)} parameters missing (first {missing[0]})',
          extra and f'{len(extra)} more parameters stored (first {extra[0]})',
          wrong and f'{wrong[0]} is {have[wrong[0]]}, the model has {want[wrong[0]]}',
        ],
      )
    )
    raise CheckpointError(f'{path} does not fit the model in its model.json: {detail}')
