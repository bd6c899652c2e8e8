"""Multi-domain validation of a backbone: None accuracy on fixed val episodes.

  vs = build_val_set(('mini-imagenet', 'omniglot'), resolution=96, episodes=60)
  accs = none_accuracy(spec, params, head, vs)   # {'mini-imagenet': 81.2, ...}

Meta-Dataset chooses hyper-parameters and checkpoints on the *valid* splits
of several domains, never on a test target; meta-training does the same here.
"None" is the ProtoNet cosine classifier on the backbone's features with no
fine-tuning, which is what meta-training changes most directly and costs one
forward pass per episode. Episodes are 5-way 5-shot 10-query tasks drawn
once from (source, 'valid', seed), so every checkpoint sees the same tasks.
"""
from typing import Dict, NamedTuple, Sequence, Tuple

import jax
import numpy as np

from tinytrain_jax import data
from tinytrain_jax.train import finetune as finetune_lib

# Val episodes use their own seed stream, apart from any run's train seed.
VAL_SEED = 20_240_607
VAL_SAMPLER = data.SamplerConfig(mode='fixed', ways=5, shots=5, queries=10)


class ValSet(NamedTuple):
  """Fixed val episodes: per source name, a tuple of host episode dicts."""
  resolution: int
  episodes: Dict[str, Tuple[dict, ...]]


def build_val_set(source_names: Sequence[str], resolution: int, episodes: int,
                  seed: int = VAL_SEED) -> ValSet:
  """Draws `episodes` 5-way 5-shot 10-query tasks per source's valid split.

  Args:
    source_names: e.g. ('mini-imagenet', 'omniglot'); each needs a 'valid'
      split.
    resolution: image side in pixels.
    episodes: tasks per source (>= 1).
    seed: sampler seed (default VAL_SEED, shared by every run).

  Returns:
    ValSet; pixels are f32 host arrays, uploaded per evaluation.
  """
  if episodes < 1:
    raise ValueError(f'val episodes must be >= 1, got {episodes}; set '
                     '--config.val_episodes')
  out = {}
  for name in source_names:
    src = data.get_source(name, 'valid')
    eps = []
    for i in range(episodes):
      es = data.sample_episode(src, VAL_SAMPLER, seed, i)
      ep = data.make_episode(src, es, resolution, buckets=None,
                             way_buckets=None)
      eps.append(
          {k: np.asarray(getattr(ep, k)) for k in finetune_lib.EPISODE_KEYS})
    out[name] = tuple(eps)
  return ValSet(resolution, out)


@jax.jit
def _stack_acc(accs):
  return jax.numpy.stack(accs)


def none_accuracy(spec, params, head, val_set: ValSet) -> Dict[str, float]:
  """Mean None accuracy (%) per source over the val set's episodes."""
  if spec.resolution != val_set.resolution:
    raise ValueError(f'val set is at {val_set.resolution} px but the model at '
                     f'{spec.resolution} px')
  out = {}
  for name, eps in val_set.episodes.items():
    accs = [
        finetune_lib.evaluate_step(spec, params, head,
                                   finetune_lib.episode_arrays(spec, ep))[1]
        for ep in eps
    ]
    out[name] = 100.0 * float(np.mean(np.asarray(_stack_acc(accs))))
  return out
