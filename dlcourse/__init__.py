"""dlcourse: every deep-learning idea built by hand in NumPy, then in PyTorch.

``import dlcourse`` stays light: it does not import torch (the PyTorch twins
load torch themselves), so the NumPy chapters start fast.
"""
from dlcourse.runtime import device, seed, show_source, in_colab

__version__ = "0.1.0"
__all__ = ["device", "seed", "show_source", "in_colab", "__version__"]
