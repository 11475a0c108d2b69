"""Inference: the unit window, the noise estimate and the strength that follows from it, slice
context, and the batched model run on CUDA or the CPU."""
