"""ProtoNet head with cosine similarity, learnable scale and bias, over padded
episodes (validity masks respected).

logits[q, c] = scale * (cos(f_q, proto_c) + bias); prototypes are masked class
means of the support features; absent class slots get a large negative (finite)
logit so padded episodes never produce NaN.
"""
import jax
import jax.numpy as jnp

NEG_LOGIT = -1e9


def init_head(scale: float = 10.0, bias: float = 0.0):
  """{'scale': f32[], 'bias': f32[]}; tau = 10 as in P>M>F-style cosine heads."""
  return {
      'scale': jnp.asarray(scale, jnp.float32),
      'bias': jnp.asarray(bias, jnp.float32)
  }


def prototypes(features, labels, mask, num_ways: int):
  """Masked class means.

  Args:
    features: f32[S, D]; labels: i32[S] in [0, num_ways); mask: bool[S].
    num_ways: static W_max.

  Returns:
    f32[W_max, D]; rows of classes with no support are 0.
  """
  onehot = jax.nn.one_hot(labels, num_ways, dtype=features.dtype)
  onehot = onehot * mask[:, None].astype(features.dtype)
  sums = onehot.T @ features
  counts = jnp.sum(onehot, axis=0)[:, None]
  return sums / jnp.maximum(counts, 1.0)


def _normalize(x, eps=1e-8):
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def cosine_logits(head, features, protos, way_mask):
  """f32[Q, D] x f32[W, D] -> f32[Q, W]; absent ways get NEG_LOGIT."""
  cos = _normalize(features) @ _normalize(protos).T
  logits = head['scale'] * (cos + head['bias'])
  return jnp.where(way_mask[None, :], logits, NEG_LOGIT)


def masked_cross_entropy(logits, labels, mask):
  """Mean cross-entropy over valid rows: sum(l * m) / max(sum(m), 1)."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
  m = mask.astype(logits.dtype)
  return jnp.sum(nll * m) / jnp.maximum(jnp.sum(m), 1.0)


def masked_accuracy(logits, labels, mask):
  """Fraction of valid rows whose argmax equals the label."""
  hit = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  m = mask.astype(jnp.float32)
  return jnp.sum(hit * m) / jnp.maximum(jnp.sum(m), 1.0)


def support_loss(head, features, labels, valid, way_mask, query_features=None):
  """ProtoNet cosine loss of the support set on its own prototypes.

  The fine-tuning loss and the Fisher pass's loss: prototypes from
  `features`, then the cross-entropy of `query_features` (default: the
  same features; e.g. augmented views of the support images) against them
  with the support labels.

  Args:
    head: {'scale', 'bias'} of `init_head`.
    features: f32[S, D]; labels: i32[S]; valid: bool[S]; way_mask: bool[W].
    query_features: f32[S, D] or None.

  Returns:
    f32[] mean cross-entropy over valid rows.
  """
  protos = prototypes(features, labels, valid, way_mask.shape[0])
  q = features if query_features is None else query_features
  logits = cosine_logits(head, q, protos, way_mask)
  return masked_cross_entropy(logits, labels, valid)


def episode_loss(head, support_features, support_y, support_mask,
                 query_features, query_y, query_mask, way_mask):
  """ProtoNet loss and accuracy of one padded episode from its features.

  Returns:
    (loss f32[], accuracy f32[]).
  """
  protos = prototypes(support_features, support_y, support_mask,
                      way_mask.shape[0])
  logits = cosine_logits(head, query_features, protos, way_mask)
  return (masked_cross_entropy(logits, query_y, query_mask),
          masked_accuracy(logits, query_y, query_mask))
