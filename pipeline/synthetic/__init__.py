"""Synthetic data: phantoms of CT anatomy, low-dose CT noise, the sample studies, and the phantom
references the denoiser is trained and checked on (used by ``models.training``)."""
