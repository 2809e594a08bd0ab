"""Chapter 10: efficiency and scale — measuring cost, pruning, quantization, distillation,
mixed precision, compilation, and distributed training (NumPy twin, PyTorch twin, checks, explorers)."""
