"""Transductive fine-tuning baseline (Dhillon et al. 2020).

  res = finetune_transductive(spec, params, head, episode, FinetuneConfig())

Every backbone weight trains (the FullTrain mask) on

  loss = CE(support) + entropy_weight · mean_q H(p(· | x_q)),

the support cross-entropy of the common protocol (`finetune.support_loss`:
ProtoNet cosine logits against prototypes of the clean support features,
recomputed each step) plus the mean Shannon entropy (nats) of the predicted
class distribution of the unlabelled query images against the same
prototypes. The queries' labels are never read during training.

Follows Dhillon et al.: the support cross-entropy + query-entropy objective
with equal weights, all weights trainable, the queries of the task itself as
the unlabelled data. Ours: the ProtoNet cosine head (their classifier is a
cosine layer initialised from the support prototypes, a close relative),
momentum SGD with the common protocol's steps and lr (they use Adam and
label smoothing), full batch (support and queries together every step).

Costs: the FullTrain rule of `cost.backward_macs` per sample, and its
fp32_saved memory at the batch that is back-propagated, support + query
images (both pass the backward).
"""
from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np

from tinytrain_jax import cost
from tinytrain_jax.data.preprocess import augment_jax
from tinytrain_jax.models import network
from tinytrain_jax.models import protonet
from tinytrain_jax.train import finetune as ft


def query_entropy(logits, mask):
  """Masked mean entropy (nats) of softmax(logits): f32[Q, W], bool[Q]."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  h = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
  m = mask.astype(h.dtype)
  return jnp.sum(h * m) / jnp.maximum(jnp.sum(m), 1.0)


def transductive_loss(features_fn, head, batch, key, augment: bool = False,
                      entropy_weight: float = 1.0):
  """Support cross-entropy + entropy_weight x query entropy (module doc).

  Args:
    features_fn: images f32[B, H, W, 3] -> features f32[B, D].
    head: cosine head {'scale', 'bias'}.
    batch: `finetune.episode_arrays` dict (query_y is not used).
    key: augmentation key (support pseudo-queries only).
    augment: augment the support pseudo-queries.
    entropy_weight: weight of the entropy term.

  Returns:
    f32[] loss.
  """
  sx, sy, sm = batch['support_x'], batch['support_y'], batch['support_mask']
  clean = features_fn(sx)
  q = features_fn(augment_jax(sx, key)) if augment else None
  ce = protonet.support_loss(head, clean, sy, sm, batch['way_mask'], q)
  protos = protonet.prototypes(clean, sy, sm, batch['way_mask'].shape[0])
  qlog = protonet.cosine_logits(head, features_fn(batch['query_x']), protos,
                                batch['way_mask'])
  return ce + entropy_weight * query_entropy(qlog, batch['query_mask'])


def _step_impl(spec, cfg, params, opt_state, head, batch, step, task, lr=None):
  key = ft.task_key(cfg.seed, task, step)

  def loss_fn(p):
    return transductive_loss(lambda x: network.apply(spec, p, x).features,
                             jax.lax.stop_gradient(head), batch, key,
                             cfg.augment)

  loss, grads = jax.value_and_grad(loss_fn)(params)
  params, opt_state = ft.sgd_update(cfg, grads, opt_state, params, lr)
  return params, opt_state, loss


transductive_step = jax.jit(_step_impl, static_argnums=(0, 1),
                            donate_argnums=(2, 3))


def _trainer_step(spec, cfg, tr, opt_state, params, head, batch, step, task,
                  lr=None):
  del params  # the trainable copy is the params
  return _step_impl(spec, cfg, tr, opt_state, head, batch, step, task, lr)


# Every weight trains, on the support CE plus the query entropy.
TRAINER = ft.ModuleTrainer(
    lambda spec, params, config: jax.tree.map(
        lambda x: jnp.array(x, copy=True), params), _trainer_step,
    lambda spec, params, tr, head, batch: ft.episode_loss(spec, tr, head, batch,
                                                          inference=True),
    lambda params, tr: tr)


def transductive_costs(spec, n_support: int, n_query: int) -> Dict[str, int]:
  """FullTrain backward MACs per sample; fp32 bytes at n_support + n_query."""
  if n_support < 1 or n_query < 0:
    raise ValueError(f'n_support must be >= 1 and n_query >= 0, got '
                     f'{n_support} and {n_query}')
  view = cost.as_layer_view(spec, {c.index: 'full' for c in spec.convs})
  mem = cost.backward_memory_bytes(spec, view, batch_size=n_support + n_query)
  return {
      'bwd_macs': int(cost.backward_macs(spec, view).total_macs),
      'bwd_bytes': int(mem.total_bytes),
      'n_trained': int(spec.backbone_params)
  }


def finetune_transductive(spec, params, head, episode,
                          config: ft.FinetuneConfig = ft.FinetuneConfig(),
                          task: int = 0) -> ft.FinetuneResult:
  """Transductive fine-tuning of one task (costs at support + query)."""
  batch = ft.episode_arrays(spec, episode)
  n_s = int(np.asarray(batch['support_mask']).sum())
  n_q = int(np.asarray(batch['query_mask']).sum())
  costs = transductive_costs(spec, n_s, n_q)
  p = jax.tree.map(lambda x: jnp.array(x, copy=True), params)
  p, curve = ft.train_module(transductive_step, spec, config, p, (head, batch),
                             task)
  loss, acc = ft.evaluate_step(spec, p, head, batch)
  return ft.FinetuneResult(float(acc), curve, p, costs, float(loss), head)
