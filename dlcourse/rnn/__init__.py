"""Chapter 06 · Recurrent networks.

``numpy_impl``  recurrent cells and sequences by hand, in PyTorch's weight layout: the vanilla
                RNN (tanh), LSTM (gates i, f, g, o) and GRU (gates r, z, n) cells, forward
                and backward; the sequence forwards and backpropagation through time
                (truncated BPTT too); gradient clipping by norm, temperature / top-k
                sampling, the embedding lookup and its gradient, padding with a mask, and
                the per-step hidden-gradient norms (vanishing gradients).
``torch_impl``  the PyTorch twins, device-agnostic.

Nothing here is imported on ``import dlcourse.rnn``: import the module you need.
"""
