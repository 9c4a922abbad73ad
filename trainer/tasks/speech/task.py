"""The speech-enhancement task: what one training step and one validation item compute.

Step: the generator's loss (reconstruction terms, plus the MetricGAN term once the schedule lets it
in); the discriminator learns D(clean, clean) -> 1 and D(clean, estimate) -> normalised PESQ of
the estimate, labelled by a persistent PESQ process pool (items whose PESQ fails are masked).
Validation: reconstruction loss, D outputs, and PESQ/SSNR/STOI (+ composite) per utterance.
TensorBoard media: noisy, clean and enhanced audio with their spectrograms.
"""

from __future__ import annotations

import time
from functools import partial

import numpy as np
import torch

from trainer.audio.images import peak_db, spectrogram_image
from trainer.core.registry import build_generator
from trainer.core.task import Media, Task, mean_summary
from trainer.metrics.labeler import PesqLabeler, process_pool
from trainer.metrics.quality import compute_metrics
from trainer.tasks.speech import losses
from trainer.tasks.speech.models import analysis_for, build_discriminator

MIN_LABEL_RATE = 0.70  # warn when fewer than 70% of the discriminator's items get a PESQ label


class SpeechTask(Task):
    maximise = ("pesq", "stoi", "ssnr", "composite", "csig", "cbak", "covl")
    epoch_counters = ("num_valid", "num_items")  # items with a PESQ label, of the discriminator's items

    def __init__(self, cfg, device: torch.device, cores: int):
        super().__init__(cfg, device, cores)
        workers = cfg.train.pesq_workers
        if workers is None:
            workers = min(cfg.data.batch_size, cores) if cores > 1 else 0
        self.labeler = PesqLabeler(workers)
        self.metric_pool = process_pool(cores) if cores > 1 else None
        self.analysis = analysis_for(cfg)  # the generator's own STFT conventions (models/analysis.py)

    def build_models(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        return build_generator(self.cfg), build_discriminator(self.cfg)

    def clean_magnitude(self, clean: torch.Tensor) -> torch.Tensor:
        return self.analysis.magnitude(clean)

    @torch.no_grad()
    def estimate_magnitude(self, out: dict) -> torch.Tensor:
        """What the discriminator judges of an estimate (detached): the generator's magnitude output,
        or for MP-SENet the analysis of its enhanced wave (``mag_g_hat``)."""
        if self.analysis.discriminator_on_resynthesis:
            return self.analysis.magnitude(out["wave"].detach())
        return out["mag"].detach()

    def generator_step(self, generator, discriminator, batch: dict, gan_weight: float):
        """Forward + loss. Returns (total, terms, context for the discriminator step)."""
        clean = batch["clean"].to(self.device, non_blocking=True)
        noisy = batch["noisy"].to(self.device, non_blocking=True)
        out = generator(noisy)
        total, terms = losses.generator_loss(out, clean, self.cfg, gan_weight,
                                             discriminator if gan_weight > 0 else None, lengths=batch["lengths"])
        context = {"clean": clean, "clean_cpu": batch["clean"], "out": out, "lengths": batch["lengths"]}
        return total, terms, context

    def start_discriminator_labels(self, context: dict) -> None:
        """Submit the detached estimates to the PESQ pool; :meth:`discriminator_step` collects the labels."""
        context["labels"] = self._submit_labels(context)

    def _submit_labels(self, context: dict):
        estimate = context["out"]["wave"].detach()
        return self.labeler.submit(context["clean_cpu"].float().numpy(), estimate.float().cpu().numpy(),
                                   context["lengths"].numpy(), sr=self.cfg.data.sample_rate)

    def discriminator_step(self, discriminator, context: dict):
        """The D loss against the PESQ labels of the estimates (failed items masked).

        Labels started by :meth:`start_discriminator_labels` are collected after the discriminator's
        forward pass (which needs none); without them (the serial order) they are computed first.
        The info's ``sec_label_wait``: how long this step waited for its labels.
        """
        clean, out = context["clean"], context["out"]
        pending = context.pop("labels", None)
        started = time.perf_counter()
        if pending is None:
            scores, valid = self._submit_labels(context).result()
            waited = time.perf_counter() - started
        clean_mag = self.clean_magnitude(clean)
        both = losses.discriminator_scores(discriminator, clean_mag, self.estimate_magnitude(out).detach())
        if pending is not None:
            started = time.perf_counter()
            scores, valid = pending.result()
            waited = time.perf_counter() - started
        target = torch.as_tensor(scores, dtype=torch.float32, device=self.device)
        valid_mask = torch.as_tensor(valid, dtype=torch.bool, device=self.device)
        loss, info = losses.discriminator_loss_from_scores(both, target, valid_mask)
        return loss, {"num_valid": int(valid.sum()), "num_items": int(len(valid)), **_floats(info),
                      "sec_label_wait": waited}

    # ----- the PESQ label rate in the window and epoch records (``pesq_valid_rate``) ------------------
    def window_extras(self, means: dict) -> dict:
        if "num_items" not in means:  # a validation summary
            return {}
        return {"pesq_valid_rate": means["num_valid"] / max(1.0, means["num_items"])}

    def epoch_extras(self, totals: dict[str, int]) -> dict:
        return {"pesq_valid_rate": totals["num_valid"] / totals["num_items"]} if totals["num_items"] > 0 else {}

    def window_note(self, record: dict) -> str:
        rate = record.get("pesq_valid_rate")
        return "" if rate is None else f"pesq-labelled {100 * rate:.0f}%"

    def warnings(self, record: dict) -> list[str]:
        rate = record.get("pesq_valid_rate")
        if rate is None or rate >= MIN_LABEL_RATE:
            return []
        if record["kind"] == "epoch":
            return [f"epoch {record['epoch'] + 1}: discriminator trained on only {100 * rate:.0f}% of its items"]
        return [f"discriminator trained on only {100 * rate:.0f}% of its items in the last "
                f"{self.cfg.train.log_every} steps (PESQ failed on the rest; silent or too-short clips?)"]

    def validation_metrics(self, validation_index: int, last: bool) -> tuple[str, ...]:
        """PESQ, SSNR and SI-SDR always, STOI and ESTOI every ``valid.stoi_every`` validations and at the last."""
        which = ["pesq", "ssnr", "si_sdr"]
        if validation_index % self.cfg.valid.stoi_every == 0 or last:
            which += ["stoi", "estoi"]
        if self.cfg.valid.composite_metrics:
            which += ["csig", "cbak", "covl"]
        return tuple(which)

    @torch.no_grad()
    def validate_item(self, generator, discriminator, batch: dict) -> dict:
        """One utterance (batch of 1): loss terms, D outputs, and the signals for the metrics."""
        clean = batch["clean"].to(self.device)
        noisy = batch["noisy"].to(self.device)
        out = generator(noisy)
        # Validation loss: the reconstruction terms only (no GAN term), so it is comparable
        # across epochs whatever the GAN schedule.
        total, terms = losses.generator_loss(out, clean, self.cfg, 0.0, None)
        clean_mag = self.clean_magnitude(clean)
        d_clean = discriminator(clean_mag, clean_mag).float().mean().item()
        d_estimate = discriminator(clean_mag, self.estimate_magnitude(out)).float().mean().item()
        length = int(batch["lengths"][0])
        return {
            "name": batch["names"][0],
            "loss": float(total),
            **{f"loss_{k}": float(v) for k, v in terms.items() if k != "gan"},
            "d_clean": d_clean,
            "d_estimate": d_estimate,
            "clean": clean[0, :length].float().cpu().numpy(),
            "enhanced": out["wave"][0, :length].float().cpu().numpy(),
        }

    @torch.no_grad()
    def media(self, generator, batch: dict) -> Media:
        """Noisy and clean (references) and enhanced audio at the original level, and their
        spectrograms on one colour scale (the noisy input's peak)."""
        length, scale = int(batch["lengths"][0]), float(batch["scale"][0])
        out = generator(batch["noisy"].to(self.device))
        waves = {name: wave[0, :length].float().cpu().numpy() / scale
                 for name, wave in (("noisy", batch["noisy"]), ("clean", batch["clean"]), ("enhanced", out["wave"]))}
        n_fft, hop = self.cfg.stft.n_fft, self.cfg.stft.hop_length
        ref = peak_db(waves["noisy"], n_fft, hop)
        images = {f"spectrogram_{name}": spectrogram_image(wave, n_fft, hop, ref_db=ref)
                  for name, wave in waves.items()}
        return Media(sample_rate=self.cfg.data.sample_rate, audio={"enhanced": waves["enhanced"]},
                     reference_audio={"noisy": waves["noisy"], "clean": waves["clean"]},
                     images={"spectrogram_enhanced": images["spectrogram_enhanced"]},
                     reference_images={k: v for k, v in images.items() if k != "spectrogram_enhanced"})

    def score(self, rows: list[dict], which: tuple[str, ...]) -> list[dict]:
        """PESQ/STOI/... of each row's enhanced signal (in the metric pool); the signals are dropped."""
        if which:
            score = partial(compute_metrics, sr=self.cfg.data.sample_rate, which=which)
            signals = ([row["clean"] for row in rows], [row["enhanced"] for row in rows])
            pool = self.metric_pool if self.metric_pool is not None and len(rows) > 1 else None
            scores = list(pool.map(score, *signals) if pool is not None else map(score, *signals))
        else:
            scores = [{} for _ in rows]
        scored = []
        for row, score in zip(rows, scores, strict=True):
            kept = {k: v for k, v in row.items() if k not in ("clean", "enhanced")}
            kept.update({k: score.get(k) for k in which})
            kept["error"] = score.get("error")
            scored.append(kept)
        return scored

    def summarise(self, rows: list[dict], which: tuple[str, ...]) -> dict:
        summary = mean_summary(rows, which)
        ok = [row for row in rows if not row.get("error")]
        if "pesq" in which and ok:
            true_norm = [(row["pesq"] - 1.0) / 3.5 for row in ok]
            summary["pesq_normalised"] = float(np.mean(true_norm))
            summary["d_pesq_correlation"] = _pearson([row["d_estimate"] for row in ok], true_norm)
        if summary.get("pesq") is not None and summary.get("stoi") is not None and summary.get("loss") is not None:
            summary["composite"] = composite_score(summary["pesq"], summary["stoi"], summary["loss"])
        return summary

    def state(self) -> dict:
        return {"pesq_labels": {"num_items": self.labeler.num_items, "num_failed": self.labeler.num_failed}}

    def close(self) -> None:
        self.labeler.close()
        if self.metric_pool is not None:
            self.metric_pool.shutdown(wait=True)


def composite_score(pesq: float, stoi: float, loss: float) -> float:
    """0.5*(PESQ-1)/3.5 + 0.3*STOI - 0.2*loss: one number to pick the checkpoint to ship."""
    return 0.5 * (pesq - 1.0) / 3.5 + 0.3 * stoi - 0.2 * loss


def _pearson(x: list[float], y: list[float]) -> float | None:
    if len(x) < 2:
        return None
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.std() == 0 or ya.std() == 0:
        return None
    return float(np.corrcoef(xa, ya)[0, 1])


def _floats(info: dict) -> dict:
    """The one-element entries of ``info``: tensors as they are (the training step copies a record's
    tensors to the host together, one synchronisation), numbers as floats."""
    out = {}
    for key, value in info.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[key] = value.detach()
        elif isinstance(value, (int, float, np.floating)):
            out[key] = float(value)
    return out
