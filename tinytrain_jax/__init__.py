"""tinytrain_jax: TinyTrain (Kwon et al., ICML 2024) in JAX.

Stages (data flows one way): models -> data -> cost -> selection -> train ->
eval. Subpackages are importable as `tinytrain_jax.models`, `.data`, `.cost`,
`.selection`, `.train`, `.eval`; the most used names are re-exported here.

  spec, params = load_pretrained('mcunet-5fps')            # ImageNet weights
  sel = select(spec, params, episode,
               SelectionConfig(*default_budgets('mcunet-5fps')))
  sel.mask        # pytree shaped like params: what to fine-tune
  sel.bwd_bytes, sel.bwd_macs  # its backward memory (bytes) and MACs/sample
"""
from tinytrain_jax import cost
from tinytrain_jax import devices
from tinytrain_jax import tree_paths
from tinytrain_jax import data
from tinytrain_jax import models
from tinytrain_jax import selection
from tinytrain_jax.cost import backward_macs, backward_memory_bytes, sparse_update_memory_kb
from tinytrain_jax.data import Episode, SamplerConfig, get_source, make_episode, sample_episode
from tinytrain_jax.mask_optax import channel_flags, dynamic_masked, optax_labels
from tinytrain_jax.mask_partition import SparsePlan, make_plan
from tinytrain_jax.masks import (LayerUpdate, LayerView, apply_mask,
                                 as_layer_view, channel_axes, check_mask,
                                 full_mask, layer_updates, layer_view,
                                 load_mask, mask_from_layers, mask_from_view,
                                 save_mask, to_dense, to_leaf_mask)
from tinytrain_jax.models import (ConvLayer, ModelOutput, ModelSpec, apply,
                                  features, init, load_pretrained, model_spec)
from tinytrain_jax.selection import (Selection, SelectionConfig, compute_fisher,
                                     default_budgets, select)

__version__ = '0.1.0'
