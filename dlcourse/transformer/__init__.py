"""Chapter 07 · Transformers.

``numpy_impl``  attention by hand, in PyTorch's weight layout: the softmax, causal and padding
                masks, scaled dot-product attention forward and backward (stage by stage),
                splitting and merging heads, multi-head attention (``nn.MultiheadAttention``'s
                parameters), layer normalisation, GELU (tanh approximation), sinusoidal and
                rotary positions, and the pre-norm transformer block, forward and backward.
``torch_impl``  the PyTorch twins, device-agnostic: the block, a small GPT, and generation
                with a key/value cache.

Nothing here is imported on ``import dlcourse.transformer``: import the module you need.
"""
