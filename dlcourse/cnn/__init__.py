"""Chapter 05 · Convolutional networks.

``numpy_impl``  convolution and pooling by hand: the output-size formula, ``conv2d_loops``
                (plain loops, for reading), ``conv2d_forward`` / ``conv2d_backward``
                (vectorised im2col, every stride, padding, dilation and groups), max and
                average pooling forward and backward, the receptive-field calculator.
``torch_impl``  the PyTorch twins, device-agnostic.

Nothing here is imported on ``import dlcourse.cnn``: import the module you need.
"""
