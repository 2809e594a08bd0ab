"""Chapter 03 · Gradient descent and optimizers.

``numpy_impl``  gradient descent on 2-D surfaces; SGD (momentum, Nesterov, weight
                decay), RMSprop, Adam and AdamW as "state in, state out" functions equal to
                ``torch.optim`` step for step; learning-rate schedules equal to
                ``torch.optim.lr_scheduler``; shuffled mini-batches; an MLP trained
                on the digits with all of it (``train_epoch``, ``train_numpy``).
``torch_impl``  the same training loop with ``torch.optim`` on any device (``train_torch``).
``checks``      the graded checks of the exercise notebook.
``explore``     contour plots of loss surfaces, live loss curves, and the optimizer race widget.

Nothing here is imported on ``import dlcourse.optim``: import the module you need.
"""
