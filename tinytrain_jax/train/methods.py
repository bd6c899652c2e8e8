"""Fine-tuning methods of TinyTrain's comparison: registry, runs, costs.

  res = run_method('lastlayer', spec, params, head, episode, FinetuneConfig())

A mask method maps (spec, params, episode) to a mask (`masks`), or None for
no training; `run_method` fine-tunes with it (`finetune.finetune_task`). A module
method (TinyTL, Transductive, AdapterDrop) has its own fine-tune (`run_fn`).
Every method's backward cost comes from one function, `method_costs`
(`cost.backward_macs` per sample, `cost.backward_memory_bytes` fp32 at the
batch that is back-propagated), which `experiments.cost` calls too. Which
weights a method starts from (pretrained for the Table-1 baselines,
meta-trained for TinyTrain; the 'w/o meta-training' ablation swaps them) is
the caller's choice of `params`.

Methods:
  none: no fine-tuning; ProtoNet on the given features.
  fulltrain: every conv kernel and bias.
  lastlayer: the last conv, kernel + bias (MBV2/Proxyless with feature_mix:
    the mix 1x1 conv; MCUNet: the last pointwise2, 576->160).
  biasonly: every conv bias.
  sparseupdate: tiny-training's static scheme, searched once per backbone
    offline (`experiments.sparseupdate_search`) and cached in
    configs/sparseupdate_schemes.json; read by `cost.methods.
    method_layer_view`, the same view the cost launcher reports.
  tinytrain: dynamic per-task `selection.select` under
    `selection.default_budgets(model)`.
  tinytrain_l2 / tinytrain_random: the same with a static channel ranking
    (SelectionConfig(channel_rank='l2' | 'random')).
  tinytrain:field=value[:field=value]: TinyTrain with other selection
    settings (the criterion's open points; `parse_variant`).
  tinytl: lite-residual branches + all biases (`tinytl.py`).
  transductive: all weights, support CE + query entropy (`transductive.py`).
  adapterdrop_25 / _50 / _75: adapters after every block, the lowest 25 /
    50 / 75 % dropped; only the adapters train (`adapters.py`).
"""
import dataclasses
import functools
from typing import Any, Callable, Dict, List, Optional, Sequence

import jax
import numpy as np

from tinytrain_jax import cost
from tinytrain_jax import masks as masks_lib
from tinytrain_jax import selection
from tinytrain_jax.cost import methods as cost_methods
from tinytrain_jax.models import network
from tinytrain_jax.models.registry import model_spec
from tinytrain_jax.train import adapters
from tinytrain_jax.train import collapse
from tinytrain_jax.train import finetune as finetune_lib
from tinytrain_jax.train import task_batch
from tinytrain_jax.train import tinytl
from tinytrain_jax.train import transductive


def _none(spec, params, episode, head=None):
  del head, spec, params, episode
  return None


def _view_mask(name):
  """Mask of a static method from the cost launcher's layer view."""

  def fn(spec, params, episode, head=None):
    del head, episode
    return masks_lib.mask_from_view(spec, params, _static_view(spec, name))

  return fn


def sparse_update_args(spec):
  """(n_bias_update, manual_weight_idx, weight_update_ratio) for `spec`."""
  return cost_methods.sparse_update_scheme(spec)


def _static_view(spec, name):
  return cost_methods.method_layer_view(spec, name)


def tinytrain_budgets(spec, scale: float = 1.0, budget_bytes: int = 0,
                      budget_macs: int = 0):
  """(bytes, MACs) budgets of TinyTrain's selection for `spec`.

  Defaults are `selection.default_budgets` (published TinyTrain costs at
  128 px), scaled by (resolution / 128)^2 because every activation and MAC
  count scales with the pixel count (at 64 px the unscaled 6.51M MACs would
  cover half a full backward and push the selection to the stem), then by
  `scale` (budget sweeps). Positive `budget_bytes` / `budget_macs` override.
  """
  b, m = selection.default_budgets(spec.name)
  px = (spec.resolution / 128.0)**2
  return (int(budget_bytes) or int(b * px * scale), int(budget_macs) or
          int(m * px * scale))


def _tinytrain(budget: float = 1.0, **overrides):
  """TinyTrain's mask fn; `overrides`: SelectionConfig fields (a variant);
  `budget`: a factor on both budgets."""

  def fn(spec, params, episode, head=None, budgets=None, full=False):
    budget_bytes, budget_macs = budgets or tinytrain_budgets(spec)
    cfg = selection.SelectionConfig(budget_bytes=budget_bytes * budget,
                                    budget_macs=budget_macs * budget,
                                    **overrides)
    sel = selection.select(spec, params, episode, cfg, head=head)
    return sel if full else sel.mask

  return fn


def _flag_bool(v: str) -> bool:
  if v.lower() not in ('true', 'false'):
    raise ValueError(f'expected true or false, got {v!r}')
  return v.lower() == 'true'


def _ratios(v: str):
  return 'any' if v == 'any' else tuple(float(x) for x in v.split('/'))


def _candidates(v: str):
  return 'all' if v == 'all' else int(v)


def _budget(v: str) -> float:
  x = float(v)
  if not x > 0:
    raise ValueError(f'expected a factor > 0, got {v!r}')
  return x


# SelectionConfig fields a variant name may set, with their parsers.
VARIANT_FIELDS = {
    'layer_order': str,
    'channel_rank': str,
    'potential': str,
    'ratios': _ratios,
    'candidates': _candidates,
    'stop_at_first_misfit': _flag_bool,
    'budget': _budget,  # x both budgets (not a SelectionConfig field)
}


def parse_variant(name: str) -> Dict[str, Any]:
  """SelectionConfig overrides of a TinyTrain variant name.

  Grammar: `tinytrain[:field=value]...`, fields from VARIANT_FIELDS, e.g.
  'tinytrain:potential=inp', 'tinytrain:layer_order=fisher:ratios=any',
  'tinytrain:ratios=1/0.5' (fractions joined by '/'),
  'tinytrain:candidates=4' (convs of the last 4 blocks),
  'tinytrain:budget=4' (4x both the memory and the compute budget). ':'
  keeps names usable in comma-list flags.

  Raises:
    ValueError: one line naming the bad part and the accepted fields.
  """
  base, *parts = name.split(':')
  if base != 'tinytrain':
    raise ValueError(f'method {name!r}: only tinytrain takes selection '
                     "settings ('tinytrain:field=value')")
  over = {}
  for part in parts:
    k, eq, v = part.partition('=')
    if not eq or k not in VARIANT_FIELDS:
      raise ValueError(f'method {name!r}: bad setting {part!r}; use '
                       f'field=value with field one of '
                       f'{", ".join(VARIANT_FIELDS)}')
    try:
      over[k] = VARIANT_FIELDS[k](v)
    except ValueError as e:
      raise ValueError(f'method {name!r}: bad value for {k}: {e}') from None
  try:
    selection.SelectionConfig(budget_bytes=1, budget_macs=1,
                              **{k: v for k, v in over.items() if k != 'budget'})
  except ValueError as e:
    raise ValueError(f'method {name!r}: {e}') from None
  return over


def _run_tinytl(spec, params, head, episode, config, task=0):
  return tinytl.finetune_tinytl(spec, params, head, episode, config, task)


def _run_transductive(spec, params, head, episode, config, task=0):
  return transductive.finetune_transductive(spec, params, head, episode, config,
                                            task)


def _run_adapterdrop(percent):

  def fn(spec, params, head, episode, config, task=0):
    return adapters.finetune_adapters(spec, params, head, episode, config,
                                      percent, task)

  return fn


@dataclasses.dataclass(frozen=True)
class Method:
  """A compared method.

  name: config name (`--config.methods`).
  mask_fn: mask methods: (spec, params, episode, head=) -> mask | None.
  start: the weights the paper's Table 1 starts it from ('pretrained' |
    'metatrained').
  run_fn: module methods: (spec, params, head, episode, FinetuneConfig,
    task) -> FinetuneResult (they train modules outside the params).
  trainer: module methods: the same as a `finetune.ModuleTrainer`, which
    `run_methods` batches over tasks and devices.
  """
  name: str
  mask_fn: Optional[Callable[..., Any]]
  start: str = 'pretrained'
  run_fn: Optional[Callable[..., Any]] = None
  trainer: Optional[finetune_lib.ModuleTrainer] = None


METHODS: Dict[str, Method] = {
    'none':
        Method('none', _none),
    'fulltrain':
        Method('fulltrain', _view_mask('fulltrain')),
    'lastlayer':
        Method('lastlayer', _view_mask('lastlayer')),
    'biasonly':
        Method('biasonly', _view_mask('biasonly')),
    'sparseupdate':
        Method('sparseupdate', _view_mask('sparseupdate')),
    'tinytrain':
        Method('tinytrain', _tinytrain(), 'metatrained'),
    'tinytrain_l2':
        Method('tinytrain_l2', _tinytrain(channel_rank='l2'), 'metatrained'),
    'tinytrain_random':
        Method('tinytrain_random', _tinytrain(channel_rank='random'),
               'metatrained'),
    'tinytl':
        Method('tinytl', None, run_fn=_run_tinytl, trainer=tinytl.TRAINER),
    'transductive':
        Method('transductive', None, run_fn=_run_transductive,
               trainer=transductive.TRAINER),
    'adapterdrop_25':
        Method('adapterdrop_25', None, run_fn=_run_adapterdrop(25),
               trainer=adapters.TRAINERS[25]),
    'adapterdrop_50':
        Method('adapterdrop_50', None, run_fn=_run_adapterdrop(50),
               trainer=adapters.TRAINERS[50]),
    'adapterdrop_75':
        Method('adapterdrop_75', None, run_fn=_run_adapterdrop(75),
               trainer=adapters.TRAINERS[75]),
}
# Methods whose cost does not depend on the task (`experiments.cost`).
STATIC_COST_METHODS = tuple(m for m in METHODS if not m.startswith('tinytrain'))


def get_method(name: str) -> Method:
  """The Method of a METHODS name or a TinyTrain variant name
  ('tinytrain:potential=inp', `parse_variant`)."""
  if name.startswith('tinytrain:'):
    return Method(name, _tinytrain(**parse_variant(name)), 'metatrained')
  if name not in METHODS:
    raise ValueError(f'unknown method {name!r}; accepted: '
                     f'{", ".join(METHODS)}')
  return METHODS[name]


def method_mask(name: str, spec, params, episode, head=None, budgets=None):
  """The mask `name` trains for this task (None = nothing); `head` is used by
  TinyTrain's Fisher pass, `budgets` = (bytes, MACs) by its selection."""
  return method_selection(name, spec, params, episode, head, budgets)[0]


def method_selection(name: str, spec, params, episode, head=None,
                     budgets=None):
  """(mask, support block input): `method_mask`'s mask and, for TinyTrain,
  the Fisher pass's `selection.BlockInput` (the support set's activation
  entering the lowest block it measured; None for the other methods), from
  which fine-tuning continues its frozen prefix (`task_batch`)."""
  m = get_method(name)
  if m.mask_fn is None:
    raise ValueError(f'method {name!r} trains extra modules, not a mask of '
                     'the params; use run_method')
  if name.startswith('tinytrain'):
    sel = m.mask_fn(spec, params, episode, head=head, budgets=budgets,
                    full=True)
    return sel.mask, sel.fisher.block_input
  return m.mask_fn(spec, params, episode, head=head), None


def mask_summary(spec, mask) -> Dict[str, Any]:
  """JSON-able {'n_trained', 'layers': {name: [channels, of, bias]}}."""
  if mask is None:
    return {'n_trained': 0, 'layers': {}}
  ups = masks_lib.layer_updates(spec, mask)
  return {
      'n_trained': masks_lib.count_trained(mask, _shapes(spec), spec),
      'layers': {
          n: [len(u.weight_channels), u.n_channels, u.bias]
          for n, u in ups.items()
      }
  }


@functools.lru_cache(maxsize=16)
def _shapes(spec):
  # Cached: tracing the initialiser took about 30 ms per task (every mask
  # method's summary), 6 % of a TinyTrain task on a 2-core CPU.
  return jax.eval_shape(lambda: network.init(spec, jax.random.PRNGKey(0)))[0]


def method_costs(method: str, spec, n_support: int = 1, n_query: int = 0,
                 mask=None) -> Dict[str, int]:
  """Backward cost of `method`: the evaluation's cost columns.

  Args:
    method: a METHODS name.
    spec: the ModelSpec (resolution fixes the counts).
    n_support: support images (the fine-tuning batch).
    n_query: query images; only `transductive` back-propagates them.
    mask: the task's mask, required for the per-task (tinytrain*) methods.

  Returns:
    {'bwd_macs': per sample (`cost.backward_macs`), 'bwd_bytes': fp32_saved
    model (`cost.backward_memory_bytes`) at the back-propagated batch,
    'batch': that batch}. Module methods add their modules by the same rules,
    and 'n_trained', the parameters they train.

  Example:
    method_costs('sparseupdate', model_spec('mcunet-5fps'), 25)
  """
  get_method(method)
  if n_support < 1:
    raise ValueError(f'n_support must be >= 1, got {n_support}')
  batch = n_support + (n_query if method == 'transductive' else 0)
  if method == 'tinytl':
    c = tinytl.tinytl_costs(spec, batch)
  elif method == 'transductive':
    c = transductive.transductive_costs(spec, n_support, n_query)
  elif method.startswith('adapterdrop_'):
    c = adapters.adapter_costs(spec, int(method.split('_')[1]), batch)
  else:
    if method.startswith('tinytrain'):
      if mask is None:
        raise ValueError(f'method {method!r} selects per task; pass its mask '
                         '(see experiments.select)')
      view = mask
    elif method == 'none':
      view = None
    else:
      view = _static_view(spec, method)
    if view is None:
      c = {'bwd_macs': 0, 'bwd_bytes': 0}
    else:
      c = {
          'bwd_macs':
              int(cost.backward_macs(spec, view).total_macs),
          'bwd_bytes':
              int(
                  cost.backward_memory_bytes(spec, view,
                                             batch_size=batch).total_bytes)
      }
  out = {
      'bwd_macs': int(c['bwd_macs']),
      'bwd_bytes': int(c['bwd_bytes']),
      'batch': int(batch)
  }
  if 'n_trained' in c:  # module methods: their trained parameter count
    out['n_trained'] = int(c['n_trained'])
  return out


def episode_ways(episode):
  """bool[W] valid ways of an Episode or episode dict."""
  return (episode['way_mask']
          if isinstance(episode, dict) else episode.way_mask)


def run_method(
    method: str, spec, params, head, episode,
    config: finetune_lib.FinetuneConfig = finetune_lib.FinetuneConfig(),
    budgets=None, task: int = 0) -> Dict[str, Any]:
  """Runs one method on one task (`budgets`: TinyTrain's (bytes, MACs);
  default `tinytrain_budgets(spec)`; `task`: the task's index in its
  evaluation, folded into the fine-tuning augmentation key).

  Returns:
    dict(method, accuracy, query_loss, bwd_macs (per sample), bwd_bytes (fp32
    model at the back-propagated batch; `method_costs`), final_support_loss,
    mask summary).
  """
  m = get_method(method)
  batch = finetune_lib.episode_arrays(spec, episode)
  if m.run_fn is not None:
    res = m.run_fn(spec, params, head, episode, config, task)
    return _result(method, spec, params, batch, config, None,
                   _module_summary(method, spec, batch), res)
  mask = method_mask(method, spec, params, episode, head, budgets)
  steps = config.steps if mask is not None else 0
  res = finetune_lib.finetune_task(spec, params, head, episode, mask,
                                   dataclasses.replace(config, steps=steps),
                                   task=task)
  return _result(method, spec, params, batch, config, mask,
                 mask_summary(spec, mask), res)


def _result(method, spec, params, batch, config, mask, summary, res,
            norm_after=None) -> Dict[str, Any]:
  """run_method's dict of a finished task (`res`: accuracy, query_loss,
  loss_curve and the fine-tuned params, or their norm `norm_after`)."""
  n_s = int(np.asarray(batch['support_mask']).sum())
  n_q = int(np.asarray(batch['query_mask']).sum())
  costs = method_costs(method, spec, n_s, n_q, mask)
  curve = np.asarray(res.loss_curve)
  if curve.size:
    if norm_after is None and getattr(res, 'params', None) is not None:
      norm_after = collapse.param_norm(res.params)
    if norm_after is not None:
      ways = int(np.asarray(batch['way_mask']).sum())
      collapse.warn_if_norm_collapsed(f'fine-tuning (method {method})',
                                      config.lr, ways, float(res.query_loss),
                                      collapse.param_norm(params), norm_after)
  return {
      'method': method,
      'accuracy': res.accuracy,
      'query_loss': res.query_loss,
      'bwd_macs': costs['bwd_macs'],
      'bwd_bytes': costs['bwd_bytes'],
      'final_support_loss': float(curve[-1]) if curve.size else None,
      'mask': summary
  }


def run_methods(method: str, spec, params, head, episodes: Sequence[Any],
                config: finetune_lib.FinetuneConfig = finetune_lib.FinetuneConfig(),
                budgets=None, tasks: Optional[Sequence[int]] = None,
                mesh=None) -> List[Dict[str, Any]]:
  """`run_method` on many tasks from the same start weights, spread over
  `mesh` (default: all local devices) by `task_batch.finetune_tasks`: tasks
  whose plans agree run vmapped in one program, split over the devices.

  Module methods (TinyTL, Transductive, AdapterDrop) run batched by
  `task_batch.module_tasks`; impl='dense' runs one task at a time through
  `run_method`. `tasks`: each task's index
  (default 0..T-1), folded into its augmentation key. Returns one dict per
  episode, as `run_method`'s.
  """
  tasks = list(range(len(episodes))) if tasks is None else list(tasks)
  m = get_method(method)
  if m.trainer is not None:
    batches = [finetune_lib.episode_arrays(spec, ep) for ep in episodes]
    outs = task_batch.module_tasks(m.trainer, spec, params, head, batches,
                                   config, tasks, mesh)
    return [
        _result(method, spec, params, b, config, None,
                _module_summary(method, spec, b), o, norm_after=o.param_norm)
        for b, o in zip(batches, outs)
    ]
  if m.run_fn is not None or config.impl != 'sparse':
    return [
        run_method(method, spec, params, head, ep, config, budgets, task=t)
        for ep, t in zip(episodes, tasks)
    ]
  batches = [finetune_lib.episode_arrays(spec, ep) for ep in episodes]
  selected = [
      method_selection(method, spec, params, ep, head, budgets)
      for ep in episodes
  ]
  task_masks = [m for m, _ in selected]
  # TinyTrain's Fisher pass already ran the support set's lowest blocks.
  outs = task_batch.finetune_tasks(spec, params, head, batches, task_masks,
                                   config, tasks, mesh,
                                   support_inputs=[b for _, b in selected])
  return [
      _result(method, spec, params, b, config, mk, mask_summary(spec, mk), o,
              norm_after=o.param_norm)
      for b, mk, o in zip(batches, task_masks, outs)
  ]


def _module_summary(method, spec, batch) -> Dict[str, Any]:
  """A module method's mask summary: its trained parameter count (at the
  episode's batch) and what it trains."""
  n_s = int(np.asarray(batch['support_mask']).sum())
  n_q = int(np.asarray(batch['query_mask']).sum())
  return {
      'n_trained': method_costs(method, spec, n_s, n_q)['n_trained'],
      'layers': _MODULE_SUMMARY.get(method, method)
  }


_MODULE_SUMMARY = {
    'tinytl': 'all biases + lite-residual branches',
    'transductive': 'all weights (support CE + query entropy)',
    'adapterdrop_25': 'adapters of the upper 75 % of blocks',
    'adapterdrop_50': 'adapters of the upper 50 % of blocks',
    'adapterdrop_75': 'adapters of the upper 25 % of blocks',
}


def cost_report(model: str, method: str, resolution: int = 128,
                feature_mix: bool = False, batch_size: int = 1,
                query_size: int = 0) -> Dict[str, Any]:
  """JSON-able costs of a static-cost method (`experiments.cost --json`).

  Top level: `method_costs` (the evaluation's columns: bwd_macs per sample,
  bwd_bytes fp32 at the back-propagated batch). 'measured': the jaxpr-derived
  step and the other cost models (`cost.methods.method_report`) for the mask
  methods it covers, else None.

  Raises:
    ValueError: unknown model / method, per-task method, bad sizes.
  """
  get_method(method)
  if method not in STATIC_COST_METHODS:
    raise ValueError(f'method {method!r} selects per task; its cost needs a '
                     'task (experiments.select); accepted here: '
                     f'{", ".join(STATIC_COST_METHODS)}')
  if batch_size < 1 or query_size < 0:
    raise ValueError(f'--batch_size must be >= 1 and --query_size >= 0, got '
                     f'{batch_size} and {query_size}')
  spec = model_spec(model, resolution=resolution, feature_mix=feature_mix)
  costs = method_costs(method, spec, batch_size, query_size)
  measured = None
  if method in cost_methods.METHODS:
    measured = cost_methods.method_report(model, method, resolution,
                                          feature_mix, costs['batch'])
  return {
      'model': spec.name,
      'method': method,
      'resolution': resolution,
      'feature_mix': bool(feature_mix),
      'batch_size': batch_size,
      'query_size': query_size,
      'cost_batch': costs['batch'],
      'bwd_macs': costs['bwd_macs'],
      'bwd_bytes': costs['bwd_bytes'],
      'measured': measured
  }
