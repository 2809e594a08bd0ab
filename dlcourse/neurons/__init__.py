"""Chapter 01: the artificial neuron, activation functions, dense layers, a first MLP.

* ``numpy_impl``  activations and their derivatives, ``dense_forward``, ``mlp_forward``,
  ``collapse_linear``, a hand-set network for XOR (NumPy only)
* ``torch_impl``  the same in PyTorch: ``Neuron``, ``MLP``, autograd derivatives, a tiny trainer
* ``checks``      the graded checks of ``exercises/01_neurons.ipynb``
* ``explore``     plots and the activation explorer widget

Importing this package imports nothing heavy; import the submodule you need.
"""
