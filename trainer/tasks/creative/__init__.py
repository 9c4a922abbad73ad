"""The creative agent: mixes an input piece and a target piece of music through learned masks,
trained against a real/fake critic. Registers the task (torch-free)."""

from trainer.core.registry import TaskSpec, register_task
from trainer.tasks.creative import config

SPEC = register_task(TaskSpec(
    name="creative_agent",
    sections={"model": config.CreativeModelConfig,
              "discriminator": config.CreativeDiscriminatorConfig, "loss": config.CreativeLossConfig,
              "checkpoint": config.CreativeCheckpointConfig},
    task="trainer.tasks.creative.task:CreativeTask",
    models="trainer.tasks.creative.models",
    demo="trainer.data.demo:ensure_creative_demo_corpus",
    architecture_keys=("model.name", "model.dim", "model.num_heads", "model.num_transformer_layers",
                       "model.num_stages", "model.front_end", "discriminator.*", "stft.n_fft", "stft.hop_length",
                       "stft.window", "stft.compress_factor"),
    checkpoint_metrics=config.METRICS,
    retired_keys=("train.pesq_workers",),  # the speech task's since issue 18; every older frozen config has it
))
