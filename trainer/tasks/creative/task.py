"""The creative-agent task (the contract: :mod:`trainer.core.task`).

Batches hold ``input`` and ``target`` (the signal names of a creative pack). The step logs the
variant's diagnostics with every step record (mask means, raw balance loss, output->input and
output->target correlation, complementarity, temporal diversity, D real/fake accuracy), and
each log window and epoch gets the copy alert of its mean correlations. TensorBoard media: the
input, target and output audio with their spectrograms, both masks over time, and the output's
correlation with each source (with the copy alert).
"""

from __future__ import annotations

import torch

from trainer.audio.images import matrix_image, peak_db, spectrogram_image
from trainer.core.registry import build_generator
from trainer.core.task import Media, Task
from trainer.tasks.creative import diagnostics, losses
from trainer.tasks.creative.models import build_discriminator


class CreativeTask(Task):
    maximise = ("complementarity",)

    def build_models(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        return build_generator(self.cfg), build_discriminator(self.cfg)

    def _sources(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return (batch["input"].to(self.device, non_blocking=True),
                batch["target"].to(self.device, non_blocking=True))

    def generator_step(self, generator, discriminator, batch: dict, gan_weight: float):
        input_wave, target_wave = self._sources(batch)
        out = generator(input_wave, target_wave)
        total, terms = losses.creative_generator_loss(out, input_wave, target_wave, self.cfg,
                                                        discriminator if gan_weight > 0 else None, gan_weight)
        terms.update(diagnostics.diagnostic_tensors(out, input_wave, target_wave))
        return total, terms, {"out": out, "input": input_wave, "target": target_wave}

    def discriminator_step(self, discriminator, context: dict):
        loss, info = losses.creative_discriminator_loss(discriminator, context["out"], context["input"],
                                                          context["target"], self.cfg)
        return loss, {key: value.detach() if isinstance(value, torch.Tensor) else float(value)  # the step reads
                      for key, value in info.items()}  # the tensors to the host together (one sync)

    def window_extras(self, means: dict) -> dict:
        """Derived fields of a log window or an epoch (from mean values)."""
        if "corr_input" not in means or "corr_target" not in means:
            return {}
        return {"alert": diagnostics.copy_alert(means["corr_input"], means["corr_target"])}

    def validation_metrics(self, validation_index: int, last: bool) -> tuple[str, ...]:
        return ()  # no speech-quality metrics for music mixes

    @torch.no_grad()
    def validate_item(self, generator, discriminator, batch: dict) -> dict:
        input_wave, target_wave = self._sources(batch)
        out = generator(input_wave, target_wave)
        total, terms = losses.creative_generator_loss(out, input_wave, target_wave, self.cfg, None, 0.0)
        diag = diagnostics.creative_diagnostics(out, input_wave, target_wave)
        row = {"name": batch["names"][0], "loss": float(total),
               **{f"loss_{k}": float(v) for k, v in terms.items()},
               **{k: v for k, v in diag.items() if k != "alert"}}
        row["complementarity"] = row.pop("complementarity_pct")
        return row

    @torch.no_grad()
    def media(self, generator, batch: dict) -> Media:
        """Input and target (references) and output audio with spectrograms on one colour scale
        (the louder source's peak); the final masks (channels x frames, 0 black, 1 bright); the
        output->input/target correlations and the copy alert of this mix."""
        input_wave, target_wave = self._sources(batch)
        out = generator(input_wave, target_wave)
        length, scale = int(batch["lengths"][0]), float(batch["scale"][0])
        waves = {name: wave[0, :length].float().cpu().numpy() / scale
                 for name, wave in (("input", input_wave), ("target", target_wave), ("output", out["wave"]))}
        n_fft, hop = self.cfg.stft.n_fft, self.cfg.stft.hop_length
        ref = max(peak_db(waves["input"], n_fft, hop), peak_db(waves["target"], n_fft, hop))
        diag = diagnostics.creative_diagnostics(out, input_wave, target_wave)
        return Media(
            sample_rate=self.cfg.data.sample_rate,
            audio={"output": waves["output"]},
            reference_audio={"input": waves["input"], "target": waves["target"]},
            images={"spectrogram_output": spectrogram_image(waves["output"], n_fft, hop, ref_db=ref),
                    "mask_input": matrix_image(out["mask_input"][0].float().cpu().numpy()),
                    "mask_target": matrix_image(out["mask_target"][0].float().cpu().numpy())},
            reference_images={f"spectrogram_{name}": spectrogram_image(waves[name], n_fft, hop, ref_db=ref)
                              for name in ("input", "target")},
            scalars={k: diag[k] for k in ("corr_input", "corr_target", "mask_input_mean", "mask_target_mean")},
            text={"alert": f"{diag['alert']} (corr_input {diag['corr_input']:.3f}, "
                           f"corr_target {diag['corr_target']:.3f})"},
        )
