"""Meta-training, sparse fine-tuning and the compared methods.

  state = meta_train.run_meta_training(MetaTrainConfig(model='mcunet-5fps'),
                                       workdir)
  spec, params, head = load_backbone(workdir)
  res = finetune.finetune_task(spec, params, head, episode, mask)
  out = run_method('tinytrain', spec, params, head, episode, FinetuneConfig())
  outs = run_methods('tinytrain', spec, params, head, episodes,
                     FinetuneConfig(), mesh=devices.make_mesh())  # T tasks

`finetune.finetune_task` and `meta_train.run_meta_training` are also
re-exported here.
"""
from tinytrain_jax.train import adapters
from tinytrain_jax.train import contribution
from tinytrain_jax.train import finetune
from tinytrain_jax.train import meta_train
from tinytrain_jax.train import methods
from tinytrain_jax.train import sparse_step
from tinytrain_jax.train import task_batch
from tinytrain_jax.train import tinytl
from tinytrain_jax.train import transductive
from tinytrain_jax.train.finetune import evaluate
from tinytrain_jax.train.finetune import FinetuneConfig
from tinytrain_jax.train.finetune import FinetuneResult
from tinytrain_jax.train.finetune import finetune_task
from tinytrain_jax.train.meta_train import load_backbone
from tinytrain_jax.train.meta_train import meta_train_step
from tinytrain_jax.train.meta_train import run_meta_training
from tinytrain_jax.train.meta_train import MetaTrainConfig
from tinytrain_jax.train.meta_train import TrainState
from tinytrain_jax.train.methods import METHODS
from tinytrain_jax.train.methods import method_costs
from tinytrain_jax.train.methods import method_mask
from tinytrain_jax.train.methods import method_selection
from tinytrain_jax.train.methods import run_method
from tinytrain_jax.train.methods import run_methods
from tinytrain_jax.train.task_batch import finetune_tasks
