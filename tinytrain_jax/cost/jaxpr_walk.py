"""Generic jaxpr walkers: MACs per layer, saved residuals, peak live bytes.

Nothing here knows a backbone. Layers are recognised by `jax.named_scope`
names in each equation's `source_info.name_stack` (forward equations carry
'jvp(blocks_3.depthwise)', backward ones 'transpose(jvp(blocks_3.depthwise))');
equations inside a sub-jaxpr with an empty name stack inherit the caller's.

MAC rules (docs/reference/cost_model.md §4.1):
  * conv_general_dilated: out elements × rhs window × rhs input features,
    divided by prod(lhs_dilation) (JAX writes a stride-s input gradient as a
    conv over an s-dilated cotangent; the inserted zeros are not real MACs).
    The same formula covers grouped / batch-grouped (depthwise weight
    gradient) convs and rhs-dilated weight gradients of strided convs.
  * dot_general: out elements × contracted size.
  * Under 'transpose(' a conv/dot whose output has the shape (as a multiset
    of dims, so layout-agnostic) of a differentiated weight is a weight
    gradient; any other backward conv/dot is an input gradient.
  * scan bodies count `length` times; while bodies once; every cond branch.

Pinned to JAX 0.10 (`jax.vjp` returns a pytree `VJP` whose leaves are the
residuals); checked at import in `_vjp_residual_leaves`.
"""
import collections
import itertools
import re
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional
from typing import Sequence, Set, Tuple

import jax
from jax.extend import core as jcore
import numpy as np

_WRAPPER = re.compile(r'\b(?:jvp|transpose|vmap|remat|checkpoint|'
                      r'rematted_computation|jit|pjit)\(')
_INLINE_PARAMS = ('jaxpr', 'call_jaxpr', 'fun_jaxpr')
_LOOP_PRIMS = ('scan', 'while', 'cond')
_MAC_PRIMS = ('conv_general_dilated', 'dot_general')


class OpCount(NamedTuple):
  """One conv_general_dilated / dot_general of a traced program."""
  primitive: str
  layer: str  # innermost known scope name, '' if none
  role: str  # 'fwd', 'wgrad' or 'igrad'
  macs: int  # for the whole batch, zero-insertion (lhs_dilation) removed
  out_shape: Tuple[int, ...]
  params: Dict[str, Any]


def scope_parts(name_stack) -> List[str]:
  """'transpose(jvp(blocks_3.depthwise))' -> ['blocks_3.depthwise']."""
  s = _WRAPPER.sub('', str(name_stack)).replace(')', '')
  return [p for p in s.split('/') if p]


def _layer_of(name_stack: str, layers: Optional[Set[str]]) -> str:
  parts = scope_parts(name_stack)
  if layers is None:
    return parts[-1] if parts else ''
  for p in reversed(parts):
    if p in layers:
      return p
  return ''


def _join(outer: str, inner) -> str:
  inner = str(inner)
  if not inner:
    return outer
  return f'{outer}/{inner}' if outer else inner


def _sub_jaxprs(eqn) -> List[Tuple[str, Any]]:
  """[(param name, Jaxpr)] of an equation's sub-programs."""
  out = []
  for k, v in eqn.params.items():
    vals = v if isinstance(v, (tuple, list)) else (v,)
    for x in vals:
      if isinstance(x, jcore.ClosedJaxpr):
        out.append((k, x.jaxpr))
      elif isinstance(x, jcore.Jaxpr):
        out.append((k, x))
  return out


def iter_equations(jaxpr, name_stack: str = '', mult: int = 1):
  """Yields (eqn, full name stack, multiplicity) of every leaf equation."""
  for eqn in jaxpr.eqns:
    ns = _join(name_stack, eqn.source_info.name_stack)
    subs = _sub_jaxprs(eqn)
    if not subs:
      yield eqn, ns, mult
      continue
    m = mult * int(eqn.params.get('length', 1)) if (eqn.primitive.name
                                                    == 'scan') else mult
    for _, sub in subs:
      yield from iter_equations(sub, ns, m)


def _prod(xs) -> int:
  return int(np.prod(xs, dtype=np.int64)) if len(xs) else 1


def op_macs(eqn) -> int:
  """MACs of one conv_general_dilated / dot_general (0 for anything else)."""
  name = eqn.primitive.name
  out = eqn.outvars[0].aval.shape
  if name == 'conv_general_dilated':
    rhs = eqn.invars[1].aval.shape
    dn = eqn.params['dimension_numbers']
    rhs_spec = dn.rhs_spec  # (out feature, in feature, *spatial)
    window = _prod([rhs[d] for d in rhs_spec[2:]])
    macs = _prod(out) * window * rhs[rhs_spec[1]]
    dil = _prod(eqn.params.get('lhs_dilation') or (1,))
    return macs // dil if macs % dil == 0 else macs / dil
  if name == 'dot_general':
    (lc, _), _ = eqn.params['dimension_numbers']
    lhs = eqn.invars[0].aval.shape
    return _prod(out) * _prod([lhs[d] for d in lc])
  return 0


def count_macs(closed_jaxpr, weight_shapes: Iterable[Sequence[int]] = (),
               layers: Optional[Set[str]] = None) -> List[OpCount]:
  """Every conv/dot of a (grad) jaxpr with its layer, role and MACs.

  Args:
    closed_jaxpr: e.g. `jax.make_jaxpr(jax.value_and_grad(loss))(*args)`.
    weight_shapes: shapes of the differentiated weights (kernels, deltas,
      classifier); backward ops producing one of them are weight gradients.
    layers: scope names to attribute to (None: innermost scope of any name).

  Returns:
    [OpCount], MACs for the traced batch.
  """
  wshapes = {tuple(sorted(s)) for s in weight_shapes}
  out = []
  for eqn, ns, mult in iter_equations(closed_jaxpr.jaxpr):
    if eqn.primitive.name not in _MAC_PRIMS:
      continue
    shape = tuple(eqn.outvars[0].aval.shape)
    if 'transpose(' not in ns:
      role = 'fwd'
    else:
      role = 'wgrad' if tuple(sorted(shape)) in wshapes else 'igrad'
    params = {
        k: v
        for k, v in eqn.params.items()
        if k in ('window_strides', 'lhs_dilation', 'rhs_dilation',
                 'feature_group_count', 'batch_group_count',
                 'dimension_numbers')
    }
    out.append(
        OpCount(eqn.primitive.name, _layer_of(ns, layers), role,
                op_macs(eqn) * mult, shape, params))
  return out


# ----------------------------------------------------------------- residuals
class Residual(NamedTuple):
  """One array the forward pass keeps for the backward pass."""
  shape: Tuple[int, ...]
  dtype: str
  nbytes: int
  # 'conv_input': operand of a forward conv/dot (attributed to that layer);
  # 'activation': anything else data-dependent, e.g. ReLU6 select arrays
  # (attributed to the producer's layer); 'param': no dependence on the
  # non-parameter arguments (weights kept for input grads, constants).
  role: str
  layer: str
  producer: str  # primitive name or 'argument'


def _nbytes(aval) -> int:
  return _prod(aval.shape) * np.dtype(aval.dtype).itemsize


def saved_residuals(
    fn: Callable, args: Sequence[Any], param_argnums: Sequence[int],
    layers: Optional[Set[str]] = None, diff_argnums: Sequence[int] = (0,)
) -> List[Residual]:
  """What `jax.vjp` of `fn` w.r.t. `diff_argnums` keeps, by role and layer.

  Args:
    fn: scalar function of `args`.
    args: arrays or ShapeDtypeStructs (pytrees).
    param_argnums: positions of parameter pytrees; residuals computed from
      them (and constants) alone are role 'param' (weights kept for input
      gradients; not saved activations in the paper conventions).
    layers: scope names to attribute to.
    diff_argnums: positions of the differentiated arguments.

  Returns:
    [Residual], each distinct array once.
  """
  diff_argnums = tuple(diff_argnums)

  def residual_leaves(*a):

    def partial_fn(*d):
      full = list(a)
      for i, x in zip(diff_argnums, d):
        full[i] = x
      return fn(*full)

    _, vjp_fn = jax.vjp(partial_fn, *[a[i] for i in diff_argnums])
    return jax.tree.leaves(vjp_fn)

  closed = jax.make_jaxpr(residual_leaves)(*args)
  jaxpr = closed.jaxpr
  leaf_counts = [len(jax.tree.leaves(a)) for a in args]
  starts = np.cumsum([0] + leaf_counts)
  param_vars = set()
  for i in param_argnums:
    param_vars.update(jaxpr.invars[starts[i]:starts[i + 1]])
  # Data-dependent = depends on a non-parameter argument (e.g. the images).
  data = {v for v in jaxpr.invars if v not in param_vars}
  producer, first_use, conv_users = {}, {}, {}
  for eqn in jaxpr.eqns:
    ns = str(eqn.source_info.name_stack)
    ins = [v for v in eqn.invars if isinstance(v, jcore.Var)]
    if any(v in data for v in ins):
      data.update(eqn.outvars)
    for v in eqn.outvars:
      producer[v] = (eqn, ns)
    for v in ins:
      first_use.setdefault(v, ns)
      if eqn.primitive.name in _MAC_PRIMS:
        conv_users.setdefault(v, ns)

  out, seen = [], set()
  for v in jaxpr.outvars:
    if not isinstance(v, jcore.Var) or v in seen:
      continue
    seen.add(v)
    prod = producer[v][0].primitive.name if v in producer else 'argument'
    if v not in data:
      role, layer = 'param', ''
    elif v in conv_users:
      role, layer = 'conv_input', _layer_of(conv_users[v], layers)
    elif v in producer:
      role, layer = 'activation', _layer_of(producer[v][1], layers)
    else:
      role, layer = 'activation', _layer_of(first_use.get(v, ''), layers)
    out.append(
        Residual(
            tuple(v.aval.shape), str(v.aval.dtype), _nbytes(v.aval), role,
            layer, prod))
  return out


# ---------------------------------------------------------- live-buffer walk
def _flat_ops(jaxpr, env, counter) -> List[Tuple[list, list, int]]:
  """Inlines call-like sub-jaxprs; returns [(in tokens, out tokens, temp)]."""
  ops = []

  def tok(v):
    if not isinstance(v, jcore.Var):
      return None  # literal
    if v not in env:
      env[v] = (next(counter), _nbytes(v.aval))
    return env[v]

  for eqn in jaxpr.eqns:
    ins = [t for t in map(tok, eqn.invars) if t is not None]
    subs = _sub_jaxprs(eqn)
    inline = [s for k, s in subs if k in _INLINE_PARAMS]
    if (subs and eqn.primitive.name not in _LOOP_PRIMS and len(subs) == 1 and
        inline):
      sub = inline[0]
      inner = {}
      n_const = len(eqn.invars) - len(sub.invars)
      for iv, ov in zip(sub.invars, eqn.invars[n_const:]):
        t = tok(ov)
        if t is not None:
          inner[iv] = t
      ops += _flat_ops(sub, inner, counter)
      for ov, iv in zip(eqn.outvars, sub.outvars):
        if isinstance(iv, jcore.Var) and iv in inner:
          env[ov] = inner[iv]
        else:
          tok(ov)
          ops.append(([], [env[ov]], 0))
      continue
    temp = max((peak_live_bytes_of(s) for _, s in subs), default=0)
    ops.append((ins, [tok(v) for v in eqn.outvars], temp))
  return ops


def peak_live_bytes_of(jaxpr, count_inputs: bool = False) -> int:
  """Peak bytes of simultaneously live arrays when running `jaxpr` in order.

  Each equation's outputs are allocated before its inputs are freed; an
  array is freed after its last use (program outputs never). Inputs and
  constants count only with `count_inputs`, and then stay live throughout
  (arguments are not donated). Call-like sub-jaxprs are inlined;
  loop/cond bodies add their own peak as a temporary.

  Args:
    jaxpr: a core Jaxpr (use `closed.jaxpr`).
    count_inputs: include the program's arguments in the live set.

  Returns:
    Peak bytes.
  """
  env, counter = {}, itertools.count()
  inputs = set()
  for v in list(jaxpr.constvars) + list(jaxpr.invars):
    env[v] = (next(counter), _nbytes(v.aval))
    inputs.add(env[v])
  ops = _flat_ops(jaxpr, env, counter)
  keep = {
      env[v] for v in jaxpr.outvars if isinstance(v, jcore.Var) and v in env
  }
  last = {}
  for i, (ins, outs, _) in enumerate(ops):
    for t in itertools.chain(ins, outs):
      last[t] = i
  counted = set(inputs) if count_inputs else set()
  live = sum(t[1] for t in counted)
  peak = live
  for i, (ins, outs, temp) in enumerate(ops):
    for t in outs:
      if t not in counted and t not in inputs:
        counted.add(t)
        live += t[1]
    peak = max(peak, live + temp)
    for t in set(ins) | set(outs):
      if (t in counted and last.get(t) == i and t not in keep and
          t not in inputs):
        counted.discard(t)
        live -= t[1]
  return peak


def summarize_by_layer(ops: Iterable[OpCount]) -> Dict[str, Dict[str, int]]:
  """{layer: {'fwd': macs, 'wgrad': macs, 'igrad': macs, 'n_wgrad': ops,
  'n_igrad': ops}} for the traced batch."""
  out = collections.defaultdict(lambda: {
      'fwd': 0,
      'wgrad': 0,
      'igrad': 0,
      'n_wgrad': 0,
      'n_igrad': 0
  })
  for op in ops:
    d = out[op.layer]
    d[op.role] += op.macs
    if op.role != 'fwd':
      d['n_' + op.role] += 1
  return dict(out)
