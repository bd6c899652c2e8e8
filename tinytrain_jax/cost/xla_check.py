"""Cross-check against XLA's cost and memory analysis (rough, backend-bound).

`xla_costs(fn, *args)` compiles `jax.jit(fn)` and reads
`compiled.cost_analysis()` (a dict, or a one-element list of dicts in older
JAX) and `compiled.memory_analysis()`. `step_xla_costs` does so for the masked
training step of `step.build_masked_loss` (value_and_grad, impl='lax').

Measured (JAX 0.10.2, XLA CPU, 2 cores; 128 px, batch 2, fp32; command:
`python -m tinytrain_jax.cost.xla_check`). FLOPs per sample vs 2 × the
jaxpr/analytic MACs (fwd + bwd; FullTrain bwd without the stem's input grad):

| model | method | XLA GFLOP/sample | 2×MACs GFLOP | ratio | temp MB |
|---|---|---|---|---|---|
| mcunet-5fps | fulltrain | 0.817 | 0.131 | 6.22 | 41.4 |
| mcunet-5fps | lastlayer | 0.048 | 0.048 | 1.00 | 1.1 |
| mbv2-w0.35+mix | fulltrain | 0.546 | 0.101 | 5.40 | 22.4 |
| mbv2-w0.35+mix | lastlayer | 0.038 | 0.037 | 1.04 | 2.0 |
| proxyless-w0.3+mix | fulltrain | 0.761 | 0.112 | 6.81 | 69.6 |
| proxyless-w0.3+mix | lastlayer | 0.039 | 0.040 | 0.98 | 1.0 |

(mcunet fulltrain: 0.817 GFLOP/sample × 100 images ≈ 82 GFLOP, the ≈78 GFLOP
of the reference.)

Why XLA differs from 2 × MACs: (1) XLA CPU rewrites depthwise convs
(feature_group_count = C) and especially their backward (batch_group_count
weight gradients, dilated input gradients of stride-2 layers) into forms whose
counted FLOPs include the inserted zeros and per-group padding, so the
depthwise-heavy backbones with large kernels (Proxyless 7×7) inflate most
(FullTrain 5.4-6.8× 2·MACs); (2) elementwise ops (bias, ReLU6 selects,
residual adds, the loss) count as FLOPs too; (3) the forward alone counts
≈ 2 × MACs, so LastLayer (a forward plus one small weight gradient) matches
to ±4 %. Temp bytes are XLA's buffer assignment after fusion and
rematerialisation and are not comparable to the paper's accounting; use
them only to see that sparse steps shrink.
"""
from typing import Any, Callable, Dict

import jax
import numpy as np

from tinytrain_jax.cost import methods
from tinytrain_jax.cost import step as step_lib
from tinytrain_jax.models import network
from tinytrain_jax.models.registry import model_spec


def _first(x):
  if isinstance(x, (list, tuple)):
    return x[0] if x else {}
  return x or {}


def xla_costs(fn: Callable, *args) -> Dict[str, float]:
  """XLA's compiled cost and memory analysis of `jax.jit(fn)(*args)`.

  Args:
    fn: a jittable function.
    *args: arrays or ShapeDtypeStructs.

  Returns:
    {'flops', 'bytes_accessed', 'temp_bytes', 'argument_bytes',
     'output_bytes'}; a value is NaN where the backend reports nothing.
  """
  compiled = jax.jit(fn).lower(*args).compile()
  ca = _first(compiled.cost_analysis())
  try:
    ma = compiled.memory_analysis()
  except (NotImplementedError, RuntimeError):
    ma = None

  def mem(field):
    v = getattr(ma, field, None) if ma is not None else None
    return float(v) if v is not None else float('nan')

  return {
      'flops': float(ca.get('flops', np.nan)),
      'bytes_accessed': float(ca.get('bytes accessed', np.nan)),
      'temp_bytes': mem('temp_size_in_bytes'),
      'argument_bytes': mem('argument_size_in_bytes'),
      'output_bytes': mem('output_size_in_bytes'),
  }


def step_xla_costs(spec, params, mask, batch_size: int = 1) -> Dict[str, Any]:
  """`xla_costs` of the masked value_and_grad step (compiles: not for tests
  at 128 px on CPU).

  Returns:
    xla_costs' dict plus 'xla_flops_per_sample' and, from the jaxpr walk,
    'fwd_macs', 'bwd_macs' and 'ratio' = XLA FLOPs / (2 × (fwd + bwd) MACs).
  """
  loss_fn, trainable, _ = step_lib.build_masked_loss(spec, params, mask)
  args = step_lib.step_args(spec, params, trainable, batch_size)
  out = xla_costs(jax.value_and_grad(loss_fn), *args)
  cost = step_lib.analyze_training_step(spec, params, mask, batch_size)
  out['xla_flops_per_sample'] = out['flops'] / batch_size
  out['fwd_macs'] = cost.fwd_macs
  out['bwd_macs'] = cost.bwd_macs
  out['ratio'] = out['xla_flops_per_sample'] / (2 *
                                                (cost.fwd_macs + cost.bwd_macs))
  return out


def _main():
  for name, mix in (('mcunet-5fps', False), ('mbv2-w0.35', True),
                    ('proxyless-w0.3', True)):
    spec = model_spec(name, feature_mix=mix)
    params = jax.eval_shape(
        lambda s=spec: network.init(s, jax.random.PRNGKey(0)))[0]
    for method in ('fulltrain', 'lastlayer'):
      view = methods.method_layer_view(spec, method)
      c = step_xla_costs(spec, params, view, batch_size=2)
      two_macs = 2 * (c['fwd_macs'] + c['bwd_macs'])
      print(
          f"| {name}{'+mix' if mix else ''} | {method} | "
          f"{c['xla_flops_per_sample'] / 1e9:.3f} | {two_macs / 1e9:.3f} | "
          f"{c['ratio']:.2f} | {c['temp_bytes'] / 1e6:.1f} |", flush=True)


if __name__ == '__main__':
  _main()
