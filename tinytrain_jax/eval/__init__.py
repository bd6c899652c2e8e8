"""Evaluation protocol, its config and reports (tables, plots)."""
from tinytrain_jax.eval.config import EvalConfig
from tinytrain_jax.eval.report import markdown_tables, mean_ci95, plot_pareto, plot_sweep, write_report
