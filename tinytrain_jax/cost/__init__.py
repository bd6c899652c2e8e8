"""Backward-pass cost models: analytic rules, jaxpr-measured step, XLA check.

Reference: docs/reference/ (cost model restated there). Public names are re-exported
here; `sparse_update_memory_kb` is tiny-training's memory model in kB.
"""
from tinytrain_jax.cost.analytic import as_layer_view
from tinytrain_jax.cost.analytic import backward_macs
from tinytrain_jax.cost.analytic import backward_memory_bytes
from tinytrain_jax.cost.analytic import BackwardMacs
from tinytrain_jax.cost.analytic import BackwardMemory
from tinytrain_jax.cost.analytic import fulltrain_saved_elements
from tinytrain_jax.cost.analytic import layer_view
from tinytrain_jax.cost.analytic import LayerMemory
from tinytrain_jax.cost.analytic import sparse_update_memory_kb
from tinytrain_jax.cost.analytic import sparse_update_to_layers
from tinytrain_jax.cost.analytic import tt_memory_bits
from tinytrain_jax.cost.analytic import tt_memory_breakdown
from tinytrain_jax.cost.analytic import TTMemory
from tinytrain_jax.cost.step import analyze_training_step
from tinytrain_jax.cost.step import build_masked_loss
from tinytrain_jax.cost.step import StepCost
