"""Chapter 02 · Backpropagation.

``engine``      a scalar autograd engine (``Value``) that records a computational graph
                and runs the chain rule through it in reverse topological order.
``numpy_impl``  layer-level backprop in NumPy: linear, ReLU, sigmoid, tanh, softmax
                cross-entropy, and a whole MLP's forward and backward pass.
``torch_impl``  the PyTorch twin of the MLP (``make_mlp``, ``load_params``).
``checks``      the graded checks of the exercise notebook.
``explore``     a computational graph drawn with matplotlib, and a widget to play with it.

Nothing here is imported on ``import dlcourse.backprop``: import the module you need.
"""
