"""Chapter 04 · Training practice.

``numpy_impl``  losses with their gradients (MSE, MAE, Huber, binary cross-entropy from
                logits, cross-entropy with label smoothing); inverted dropout; batch
                normalization in train and eval mode with running statistics; metrics
                (accuracy, precision, recall, F1, confusion matrix, ROC curve and AUC).
``practice``    what surrounds the model: standardisation fitted on the training set,
                stratified splits, digit augmentation (shifts, rotations, noise),
                initialization schemes (= ``torch.nn.init``), signal and gradient scale by
                depth, early stopping that keeps the best weights, grid and random search.
``torch_impl``  the PyTorch twins, device-agnostic.

Nothing here is imported on ``import dlcourse.training``: import the module you need.
"""
