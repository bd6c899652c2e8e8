"""'/'-joined paths into nested-dict pytrees: params, masks, grads, views.

One set of helpers for every module that names a leaf or a layer by path,
e.g. 'blocks_3/depthwise' (a layer: a dict of leaves) or
'blocks_3/depthwise/kernel' (a leaf). Paths use the dict keys, as
`flax.traverse_util.flatten_dict(tree, sep='/')` writes them; `leaf_paths`
lists them in `jax.tree.leaves` order, so `zip(leaf_paths(t),
jax.tree.leaves(t))` pairs each leaf with its path.
"""
from typing import Any, List

import jax

SEP = '/'


def leaf_paths(tree) -> List[str]:
  """Paths of all leaves, in `jax.tree.leaves(tree)` order."""
  return [
      SEP.join(str(getattr(k, 'key', k))
               for k in kp)
      for kp, _ in jax.tree_util.tree_flatten_with_path(tree)[0]
  ]


def get(tree, path: str) -> Any:
  """tree[a][b] for path 'a/b' (a leaf or a sub-dict)."""
  for part in path.split(SEP):
    tree = tree[part]
  return tree


def replace(tree, path: str, value) -> Any:
  """A copy of `tree` with tree[a][b] = value for path 'a/b'.

  Only the dicts along the path are copied (missing ones are created); every
  other sub-tree and leaf is the very same object, so untouched params stay
  bit-identical for free.
  """
  head, _, rest = path.partition(SEP)
  out = dict(tree)
  out[head] = replace(tree.get(head, {}), rest, value) if rest else value
  return out
