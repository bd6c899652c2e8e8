"""Sparse fine-tune steps: real savings (partition + deltas) and the dense reference.

Three levels of masks:
  * `impl='dense'` (`finetune.make_dense_step`): grads of *all* params times
    the 0/1 mask passed in as data (so XLA cannot prune it), then SGD, then
    the mask again. Correct, saves nothing; the reference.
  * leaf and channel level: the partition of `mask_partition` (full leaves
    differentiated, frozen ones behind `stop_gradient`, channel-sparse
    kernels trained through deltas); `sparse_value_and_grad` differentiates
    only that partition.
"""
import jax
import optax

from tinytrain_jax import mask_partition


def sparse_optimizer(lr: float,
                     momentum: float) -> optax.GradientTransformation:
  return optax.sgd(lr, momentum=momentum or None)


def sparse_value_and_grad(loss_fn, trainable, params, head, indices, *args):
  """(loss, grads) of `loss_fn(params_eff, head, deltas, *args)` w.r.t. the
  trainable partition only (`mask_partition.split`).

  loss_fn receives the effective params (frozen leaves stop_gradient'ed),
  the head and the `deltas` dict for `network.apply`.
  """

  def f(tr):
    p = mask_partition.effective_params(params, tr)
    h = tr['head'] if 'head' in tr else jax.lax.stop_gradient(head)
    return loss_fn(p, h, mask_partition.delta_inputs(tr, indices), *args)

  return jax.value_and_grad(f)(trainable)


def dense_value_and_grad(loss_fn, params, head, *args):
  """(loss, grads) of loss_fn(params, head, None, *args) w.r.t. both."""

  def f(tr):
    return loss_fn(tr['params'], tr['head'], None, *args)

  return jax.value_and_grad(f)({'params': params, 'head': head})
