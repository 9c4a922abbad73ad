"""Speech enhancement: a generator (trainer/tasks/speech/models) trained against a MetricGAN
discriminator that learns to predict PESQ. Registers the task (torch-free)."""

from trainer.core.registry import TaskSpec, register_task
from trainer.tasks.speech import config

SPEC = register_task(TaskSpec(
    name="speech_enhancement",
    sections={"model": config.SpeechModelConfig, "discriminator": config.MetricDiscriminatorConfig,
              "loss": config.SpeechLossConfig, "train": config.SpeechTrainConfig, "valid": config.SpeechValidConfig,
              "checkpoint": config.SpeechCheckpointConfig},
    task="trainer.tasks.speech.task:SpeechTask",
    models="trainer.tasks.speech.models",
    demo="trainer.data.demo:ensure_demo_corpus",
    architecture_keys=("model.*", "discriminator.num_channels", "discriminator.sigmoid_beta", "stft.n_fft",
                       "stft.hop_length", "stft.window", "stft.compress_factor"),
    checkpoint_metrics=config.METRICS,
))
