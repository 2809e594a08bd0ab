# %% [markdown]
# # 04 · Training practice — exercises
#
# In this notebook you write the pieces of a careful training run yourself, each the way PyTorch or
# scikit-learn computes it, so that your function could replace theirs:
#
# | # | function | what it is | points |
# |---|---|---|---|
# | 1 | `bce_with_logits` | binary cross-entropy from logits, and its gradient, stable for any logit | 2 |
# | 2 | `standardize_splits` | standardise train, val and test with the training statistics only | 2 |
# | 3 | `dropout_forward` | inverted dropout, train and eval mode | 2 |
# | 4 | `batchnorm_forward` | batch norm with running statistics, train and eval mode | 3 |
# | 5 | `batchnorm_backward` | the gradients of batch norm in train mode | 3 |
# | 6 | `precision_recall_f1` | per-class precision and recall, and the macro F1 | 2 |
# | 7 | `he_init` | He initialization for a ReLU layer | 2 |
# | 8 | `fit_with_early_stopping` | **the larger task**: a training loop that stops early and keeps the best weights | 4 |
# | | five concept questions | a number or a pair of numbers each | 5 × 1 |
#
# **How the checks work.** Under each exercise is a check cell, `check.<name>(<name>)`. Run it
# after the cell with your function: it runs your code on several cases, from small to large,
# compares with the course's reference, and shows ✓ or ✗ with the points and one message that says
# what is wrong (and, for the classic mistakes, *which* mistake it is), with the smallest failing
# case and a line that reproduces it. It never crashes the notebook. Stuck? `check.hint("he_init")`
# gives a hint; run it again for the next one. Each exercise has three hints: first the idea, then
# the approach, last something close to code, so try the first ones first. The concept questions
# at the end have no hints (work them out from the lesson). The last cell adds up your score.
#
# **Conventions.** Dimension letters: `N` examples, `D` features, `K` classes. Every function
# returns new arrays and changes none of its inputs in place (except where an exercise says so).
# Write the code yourself: handing in (or calling) the course's own version of an exercise earns
# no points. The point of every exercise is to write it **in NumPy**: wrapping PyTorch or scikit-learn
# (`F.binary_cross_entropy_with_logits` and autograd, `StandardScaler`, ...) would pass the checks,
# which use those libraries as the oracles they compare with, but it teaches nothing; only the course's
# own functions are refused.

# %%
import numpy as np

from dlcourse.training.checks import check

# %% [markdown]
# ## Exercise 1 · Binary cross-entropy from logits (2 points)
#
# For a logit $z$ and a label $y \in [0, 1]$, the loss is
# $\ell = -[\,y \log\sigma(z) + (1-y)\log(1-\sigma(z))\,]$. Written this way it breaks down for
# large $|z|$: $\sigma(-1000)$ is exactly 0 in floating point, and $\log 0 = -\infty$. Since
# $\log\sigma(z) = -\operatorname{softplus}(-z)$ and $\log(1-\sigma(z)) = -\operatorname{softplus}(z)$,
# the same loss is
#
# $$\ell = \operatorname{softplus}(z) - z\,y, \qquad \operatorname{softplus}(z) = \log(1 + e^z),
# \qquad \frac{\partial\ell}{\partial z} = \sigma(z) - y .$$
#
# Write `bce_with_logits(logits, target)`:
#
# * `logits`, `target`: arrays of shape `(N,)` or `(N, D)`, the same shape
# * return `(loss, dlogits)`: `loss` is the **mean** over all elements (a float, as
#   `F.binary_cross_entropy_with_logits`), `dlogits` the gradient of that mean, shaped like `logits`
#
# It must stay finite for logits of ±1000: compute softplus so that no `exp` overflows.

# %%
def bce_with_logits(logits, target):
    """Mean binary cross-entropy on logits; returns (loss, dlogits)."""
    ### BEGIN SOLUTION
    z = logits
    softplus = np.logaddexp(0.0, z)          # log(e^0 + e^z), computed stably
    loss = float(np.mean(softplus - z * target))
    prob = np.exp(z - softplus)              # sigmoid(z) = e^z / (1 + e^z), never overflows
    return loss, (prob - target) / z.size
    ### END SOLUTION


# %%
check.bce_with_logits(bce_with_logits)

# %% [markdown]
# ## Exercise 2 · Standardising the splits (2 points)
#
# Inputs on very different scales slow gradient descent down, so we shift and scale every feature
# to mean 0 and standard deviation 1. The statistics must come from the **training set only**: the
# validation and test sets stand for data the model has not seen, and computing the mean over them
# too leaks information about them into training.
#
# Write `standardize_splits(x_train, x_val, x_test)`:
#
# * inputs of shapes `(N_train, D)`, `(N_val, D)`, `(N_test, D)`; do not modify them
# * per feature, the training set's mean and standard deviation (`ddof=0`, as scikit-learn's
#   `StandardScaler`); a feature that is constant on the training set has std 0: use scale 1 there
#   (the digits have pixels that are always 0)
# * return the tuple `(train, val, test)` of standardised arrays

# %%
def standardize_splits(x_train, x_val, x_test):
    """Standardise three splits with the training set's per-feature mean and std."""
    ### BEGIN SOLUTION
    mu = np.mean(x_train, axis=0)            # (D,)
    sd = np.std(x_train, axis=0)             # (D,)
    sd[sd == 0] = 1.0                        # sd is our own array: changing it is fine
    return tuple((split - mu) / sd for split in (x_train, x_val, x_test))
    ### END SOLUTION


# %%
check.standardize_splits(standardize_splits)

# %% [markdown]
# ## Exercise 3 · Inverted dropout (2 points)
#
# In training, dropout zeroes each unit independently with probability `p`; *inverted* dropout
# scales the survivors by $1/(1-p)$, so that every unit's expected value is unchanged and the
# layer is simply the identity at evaluation time.
#
# Write `dropout_forward(x, p, train, rng)`:
#
# * `x`: array of shape `(N, D)`; `p`: the drop probability in `[0, 1]`; `rng`: a
#   `np.random.Generator` to draw the mask from
# * training (`train=True`): return `(out, mask)` where `mask` is a boolean array of shape
#   `(N, D)`, `True` where the unit is **kept**, and `out = x * mask / (1 - p)`; for `p = 1` every
#   unit is dropped and `out` is zeros
# * evaluation (`train=False`): return `(x, all-True mask)`, a copy of `x` is fine
#
# The check cannot know your random draws, so it checks that `out` fits the mask you return,
# that about a fraction `1 - p` is kept, independently for every element, and that the same seed
# gives the same mask.

# %%
def dropout_forward(x, p, train, rng):
    """Inverted dropout; returns (out, mask), mask True where a unit is kept."""
    ### BEGIN SOLUTION
    if not train:
        return x.copy(), np.full(x.shape, True)
    mask = rng.random(x.shape) >= p
    if p == 1:
        return np.zeros_like(x), mask
    return x * mask / (1 - p), mask
    ### END SOLUTION


# %%
check.dropout_forward(dropout_forward)

# %% [markdown]
# ## Exercise 4 · Batch norm, forward (3 points)
#
# Write `batchnorm_forward(x, gamma, beta, running_mean, running_var, train=True, momentum=0.1,
# eps=1e-5)`, the forward pass of `nn.BatchNorm1d(D)` on an `(N, D)` batch, with PyTorch's
# conventions. `gamma`, `beta`, `running_mean`, `running_var` have shape `(D,)`.
#
# * **train mode**: with the batch's per-feature mean $\mu$ and *biased* variance $\sigma^2$
#   (divided by `N`),
#   $\hat x = (x - \mu)/\sqrt{\sigma^2 + \epsilon}$ and $\text{out} = \gamma\,\hat x + \beta$;
#   the running statistics move towards the batch's:
#   `new = (1 - momentum) * running + momentum * batch_statistic`, where the variance that goes into
#   the running average is the *unbiased* one, $\sigma^2 \cdot N/(N-1)$.
# * **eval mode**: normalise with `running_mean` and `running_var` instead, and return them
#   unchanged.
#
# Return `(out, new_running_mean, new_running_var)`, without changing the arrays you were given
# (state in, state out). The check starts from running statistics that earlier batches have
# already moved, as in the middle of training.

# %%
def batchnorm_forward(x, gamma, beta, running_mean, running_var, train=True, momentum=0.1, eps=1e-5):
    """Batch norm over (N, D); returns (out, new_running_mean, new_running_var)."""
    ### BEGIN SOLUTION
    if train:
        n = x.shape[0]
        mean = x.mean(axis=0)
        var = x.var(axis=0)
        new_mean = (1 - momentum) * running_mean + momentum * mean
        new_var = (1 - momentum) * running_var + momentum * var * n / (n - 1)
    else:
        mean, var = running_mean, running_var
        new_mean, new_var = running_mean, running_var
    x_hat = (x - mean) / np.sqrt(var + eps)
    return gamma * x_hat + beta, new_mean, new_var
    ### END SOLUTION


# %%
check.batchnorm_forward(batchnorm_forward)

# %% [markdown]
# ## Exercise 5 · Batch norm, backward (3 points)
#
# Write `batchnorm_backward(dout, x, gamma, eps=1e-5)`: the gradients of train-mode batch norm
# (exercise 4's `out`) with respect to `x`, `gamma` and `beta`, given the upstream gradient `dout`
# of shape `(N, D)`. Recompute what you need of the forward pass from `x`.
#
# In train mode the batch mean and variance are functions of every example, so each `dx` gets
# three terms: the direct path through $\hat x$, the path through the mean, and the path through
# the variance. With $m = N$ and $d\hat x = \text{dout}\cdot\gamma$:
#
# $$dx = \frac{1}{\sqrt{\sigma^2+\epsilon}}\Big(d\hat x - \tfrac1m\textstyle\sum_n d\hat x
# - \hat x\,\tfrac1m\sum_n d\hat x\,\hat x\Big)$$
#
# Return `(dx, dgamma, dbeta)` of shapes `(N, D)`, `(D,)`, `(D,)`. (The tests prove that the
# reference equals `nn.BatchNorm1d`'s autograd.)

# %%
def batchnorm_backward(dout, x, gamma, eps=1e-5):
    """Gradients of train-mode batch norm; returns (dx, dgamma, dbeta)."""
    ### BEGIN SOLUTION
    m = x.shape[0]
    mean, var = x.mean(axis=0), x.var(axis=0)
    inv_std = 1 / np.sqrt(var + eps)
    x_hat = (x - mean) * inv_std
    dbeta = dout.sum(axis=0)
    dgamma = (dout * x_hat).sum(axis=0)
    dx_hat = dout * gamma
    dx = inv_std / m * (m * dx_hat - dx_hat.sum(axis=0) - x_hat * (dx_hat * x_hat).sum(axis=0))
    return dx, dgamma, dbeta
    ### END SOLUTION


# %%
check.batchnorm_backward(batchnorm_backward)

# %% [markdown]
# ## Exercise 6 · Precision, recall and macro F1 (2 points)
#
# For class $c$: precision $= TP/(TP+FP)$ (of the examples *predicted* $c$, the fraction that are
# $c$), recall $= TP/(TP+FN)$ (of the examples that *are* $c$, the fraction found), and
# $F_1 = 2PR/(P+R)$. The **macro** F1 averages the per-class $F_1$ over all classes, so a rare class
# weighs as much as a frequent one.
#
# Write `precision_recall_f1(y_true, y_pred, num_classes)`:
#
# * `y_true`, `y_pred`: integer arrays of shape `(N,)` with classes `0 .. K-1`, `K = num_classes`
# * return `(precision, recall, macro_f1)`: two arrays of shape `(K,)` and a float
# * a ratio whose denominator is 0 is 0 (scikit-learn's `zero_division=0`), and every one of the K
#   classes counts in the macro mean, even one that occurs in neither array

# %%
def precision_recall_f1(y_true, y_pred, num_classes):
    """Per-class precision and recall, and the macro F1 over all num_classes classes."""
    ### BEGIN SOLUTION
    classes = np.arange(num_classes)[:, None]                       # (K, 1) against (N,)
    is_true, is_pred = y_true == classes, y_pred == classes         # (K, N)
    tp = (is_true & is_pred).sum(axis=1)
    n_pred, n_true = is_pred.sum(axis=1), is_true.sum(axis=1)
    precision = np.where(n_pred > 0, tp / np.maximum(n_pred, 1), 0.0)
    recall = np.where(n_true > 0, tp / np.maximum(n_true, 1), 0.0)
    f1 = np.where(n_pred + n_true > 0, 2 * tp / np.maximum(n_pred + n_true, 1), 0.0)
    return precision, recall, float(f1.mean())
    ### END SOLUTION


# %%
check.precision_recall_f1(precision_recall_f1)

# %% [markdown]
# ## Exercise 7 · He initialization (2 points)
#
# A ReLU layer zeroes about half of its inputs, which halves the variance of the signal at every
# layer; He et al. compensate by drawing the weights with variance $2/\text{fan\_in}$.
#
# Write `he_init(fan_in, fan_out, rng)`: return `W` of shape `(fan_in, fan_out)` (so that
# `x @ W` maps `fan_in` features to `fan_out`), every entry drawn independently from
# $\mathcal N(0,\ 2/\text{fan\_in})$ with the generator `rng`. (This is the distribution of
# `torch.nn.init.kaiming_normal_(w, nonlinearity="relu")` on PyTorch's `(fan_out, fan_in)` weight.)
# The check looks at the statistics of a large `W`, and at whether the same seed gives the same
# weights.

# %%
def he_init(fan_in, fan_out, rng):
    """He normal initialization, W of shape (fan_in, fan_out)."""
    ### BEGIN SOLUTION
    return rng.standard_normal((fan_in, fan_out)) * np.sqrt(2 / fan_in)
    ### END SOLUTION


# %%
check.he_init(he_init)

# %% [markdown]
# ## Exercise 8 · Training with early stopping (4 points): the larger task
#
# The validation loss usually falls, then rises again as the model starts to memorise the training
# set. Early stopping watches it and keeps the weights of its best epoch. Write
# `fit_with_early_stopping(params, train_epoch, val_loss, max_epochs, patience)`:
#
# * `params`: a dict of NumPy arrays (the model's weights); `train_epoch(params)` runs one epoch of
#   training and **updates those arrays in place**, as a PyTorch optimizer does;
#   `val_loss(params)` returns the validation loss (a float)
# * after each epoch, measure the validation loss; an epoch *improves* when its loss is **strictly
#   lower** than the best so far; stop once `patience` epochs in a row have not improved, or after
#   `max_epochs` epochs
# * return `(best_params, best_epoch, val_losses)`: a dict with **copies** of the arrays as they
#   were after the best epoch (not the last one), that epoch's number **counted from 1**, and the
#   list of all validation losses measured, one per epoch
#
# The check drives your loop with scripted losses (down, a plateau, down again within the
# patience, then up) and with a real linear regression that overfits.

# %%
def fit_with_early_stopping(params, train_epoch, val_loss, max_epochs, patience):
    """Train until `patience` epochs in a row bring no new best; returns (best_params, best_epoch, val_losses)."""
    ### BEGIN SOLUTION
    val_losses = []
    best_epoch, best_params = 0, {name: array.copy() for name, array in params.items()}
    for epoch in range(1, max_epochs + 1):
        train_epoch(params)
        val_losses.append(float(val_loss(params)))
        if val_losses[-1] < min(val_losses[:-1], default=np.inf):
            best_epoch, best_params = epoch, {name: array.copy() for name, array in params.items()}
        elif epoch - best_epoch >= patience:
            break
    return best_params, best_epoch, val_losses
    ### END SOLUTION


# %%
check.fit_with_early_stopping(fit_with_early_stopping)

# %% [markdown]
# ## Concept questions (1 point each)
#
# Answer each with a value. The check says whether it is right and, once it is, why.
#
# **Q1.** In a data set of digits, 10 % are nines. A "model" answers *not 9* for every image.
# What is its accuracy (a fraction between 0 and 1)?

# %%
def q_accuracy_always_not_nine():
    """The accuracy of always predicting 'not 9' (a number)."""
    ### BEGIN SOLUTION
    return 0.9
    ### END SOLUTION


# %%
check.q_accuracy_always_not_nine(q_accuracy_always_not_nine)

# %% [markdown]
# **Q2.** What is the standard deviation of He-initialised weights for a layer with `fan_in = 512`?

# %%
def q_he_std():
    """The He std for fan_in = 512 (a number)."""
    ### BEGIN SOLUTION
    return 0.0625
    ### END SOLUTION


# %%
check.q_he_std(q_he_std)

# %% [markdown]
# **Q3.** How many *learnable parameters* does `nn.BatchNorm1d(64)` have?

# %%
def q_batchnorm_parameters():
    """The number of learnable parameters of BatchNorm1d(64) (a number)."""
    ### BEGIN SOLUTION
    return 128
    ### END SOLUTION


# %%
check.q_batchnorm_parameters(q_batchnorm_parameters)

# %% [markdown]
# **Q4.** You can afford 9 trials to tune two hyperparameters, only one of which really matters.
# How many distinct values of the important one does a 3 × 3 grid try, and how many does random
# search with 9 trials try? Answer with the pair `(grid, random)`.

# %%
def q_grid_vs_random():
    """(distinct values tried by the grid, by random search)."""
    ### BEGIN SOLUTION
    return (3, 9)
    ### END SOLUTION


# %%
check.q_grid_vs_random(q_grid_vs_random)

# %% [markdown]
# **Q5.** A unit's input is 2.0. What is its expected value after inverted dropout with `p = 0.5`
# in training mode?

# %%
def q_dropout_expectation():
    """The expected output (a number)."""
    ### BEGIN SOLUTION
    return 2.0
    ### END SOLUTION


# %%
check.q_dropout_expectation(q_dropout_expectation)

# %% [markdown]
# ## Your score

# %%
check.scoreboard()
