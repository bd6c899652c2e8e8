"""Detects a training collapse: loss stuck at chance while the weights blew up.

With a far too large learning rate (say 1e6) the weights grow by orders of
magnitude within a step or two, the features saturate, every class gets the
same cosine logit and the ProtoNet loss sits at exactly ln(ways), chance. The
run stays finite, so the NaN checks do not fire; this check does.

  msg = collapse.check('fine-tuning tinytrain', lr, ways, final_loss,
                       norm_before, collapse.param_norm(params_after))
  collapse.warn_if_collapsed('meta-training', lr, ways, loss, before, after)
"""
import math
from typing import Any, Optional

from absl import logging
import jax
import numpy as np

# Weights count as blown up when their global L2 norm grew by this factor.
NORM_GROWTH = 10.0
# Loss within this relative distance of ln(ways) counts as chance.
LOSS_RTOL = 1e-3

_warned = set()


def param_norm(params: Any) -> float:
  """Global L2 norm of a pytree of arrays (float64 on the host)."""
  return float(
      np.sqrt(
          sum(
              np.sum(np.square(np.asarray(x, np.float64)))
              for x in jax.tree.leaves(params))))


def check(what: str, lr: float, ways: int, final_loss: float,
          norm_before: float, norm_after: float) -> Optional[str]:
  """A one-line message when the run collapsed, else None.

  Args:
    what: the run, e.g. 'fine-tuning (method fulltrain)' or 'meta-training'.
    lr: its learning rate (quoted in the message).
    ways: classes of the task; chance loss is ln(ways).
    final_loss: the loss at the end of training.
    norm_before, norm_after: global L2 norm of the weights before and after.
  """
  if ways < 2 or not math.isfinite(final_loss):
    return None
  chance = math.log(ways)
  growth = norm_after / max(norm_before, 1e-30)
  if abs(final_loss - chance) <= LOSS_RTOL * chance and growth > NORM_GROWTH:
    return (f'{what} with lr {lr:g} collapsed: loss {final_loss:.4f} = '
            f'ln({ways}) (chance) while the weight norm grew {growth:.3g}x; '
            'its accuracy is chance level: lower the lr')
  return None


def warn_if_collapsed(what: str, lr: float, ways: int, final_loss: float,
                      norm_before: float, params_after: Any) -> Optional[str]:
  """`check`, logging the message as one warning line (once per what/lr)."""
  return warn_if_norm_collapsed(what, lr, ways, final_loss, norm_before,
                                param_norm(params_after))


def warn_if_norm_collapsed(what: str, lr: float, ways: int, final_loss: float,
                           norm_before: float,
                           norm_after: float) -> Optional[str]:
  """`warn_if_collapsed` given the weights' norm after training."""
  msg = check(what, lr, ways, final_loss, norm_before, norm_after)
  if msg and (what, lr) not in _warned:
    _warned.add((what, lr))
    logging.warning('%s', msg)
  return msg
