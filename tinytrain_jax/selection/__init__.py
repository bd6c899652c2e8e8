"""Task-adaptive sparse-update selection (TinyTrain, docs/reference/criterion.md).

  fs = compute_fisher(spec, params, episode)           # one jitted pass
  sel = select(spec, params, episode,
               SelectionConfig(*default_budgets('mcunet-5fps')))
  sel.mask, sel.layers, sel.bwd_bytes, sel.bwd_macs
"""
from tinytrain_jax.selection.budget import default_budgets
from tinytrain_jax.selection.budget import PUBLISHED
from tinytrain_jax.selection.criterion import candidate_convs
from tinytrain_jax.selection.criterion import layer_scores
from tinytrain_jax.selection.criterion import normalisers
from tinytrain_jax.selection.criterion import reachable_convs
from tinytrain_jax.selection.criterion import select
from tinytrain_jax.selection.criterion import select_from_scores
from tinytrain_jax.selection.criterion import Selection
from tinytrain_jax.selection.criterion import SelectionConfig
from tinytrain_jax.selection.fisher import BlockInput
from tinytrain_jax.selection.fisher import compute_fisher
from tinytrain_jax.selection.fisher import fisher_per_channel
from tinytrain_jax.selection.fisher import fisher_step
from tinytrain_jax.selection.fisher import FisherScores
from tinytrain_jax.selection.fisher import support_loss
from tinytrain_jax.selection.sparse_update_search import Scheme
from tinytrain_jax.selection.sparse_update_search import search_scheme
from tinytrain_jax.selection.static_masks import l2_order
from tinytrain_jax.selection.static_masks import last_k_mask
from tinytrain_jax.selection.static_masks import random_mask
from tinytrain_jax.selection.static_masks import random_order
from tinytrain_jax.selection.static_masks import sparse_update_mask
from tinytrain_jax.selection.static_masks import static_l2_mask
from tinytrain_jax.selection.task import format_selection
from tinytrain_jax.selection.task import select_for_task
from tinytrain_jax.selection.task import selection_report
from tinytrain_jax.selection.task import task_episode
