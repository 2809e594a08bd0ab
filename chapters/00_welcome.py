# %% [markdown]
# # 00 · Welcome: how this course works
#
# This course teaches the fundamentals of deep learning by having you **build every
# piece yourself**. Each idea appears twice:
#
# 1. **By hand, in NumPy** — the forward pass *and* the backward pass, written out so
#    you can see every multiplication and every derivative.
# 2. **In PyTorch** — the way practitioners write it, running on a GPU when one is there.
#
# and then the course **proves that the two agree**, to many decimal places. When they
# agree you know you understood the idea, not just the API.
#
# This notebook takes about a minute. It shows you the four things you will use in
# every chapter: lessons, exercises with checks, the GPU, and grading.

# %% [markdown]
# ## 1 · The pieces of a chapter
#
# | file | what it is for |
# |---|---|
# | `chapters/NN_topic.ipynb` | the **lesson**: text, maths, plots, sliders; run it and play |
# | `exercises/NN_topic.ipynb` | the **exercises**: functions for you to write, each with a check |
# | `solutions/NN_topic.ipynb` | the same notebook, solved: open it after you tried |
# | `dlcourse/<concept>/numpy_impl.py` | the course's NumPy version of every function |
# | `dlcourse/<concept>/torch_impl.py` | the PyTorch version of the same functions |
#
# Lessons never paste code into a cell and hope it matches the package: they *show*
# the package's real source with `show_source`, so what you read is exactly what runs.
# For example, here is `rel_error`, the small function the course uses everywhere to
# say how far two arrays are apart, relative to their size (you will meet it when we
# check gradients in chapter 02):

# %%
import numpy as np

import dlcourse
from dlcourse import show_source
from dlcourse.gradcheck import rel_error

show_source(rel_error)

# %% [markdown]
# ## 2 · Reproducible randomness
#
# Every notebook starts from a fixed seed, so the numbers you see are the numbers the
# authors saw. `dlcourse.seed(n)` seeds Python, NumPy and PyTorch at once and returns a
# NumPy random generator to draw from.

# %%
rng = dlcourse.seed(0)
print(rng.standard_normal(3).round(4))
rng = dlcourse.seed(0)
print(rng.standard_normal(3).round(4), "<- the same numbers again")

# %% [markdown]
# ## 3 · NumPy first, then PyTorch
#
# Here is the whole method in miniature. A *linear layer* computes $y = x W^\top + b$.
# We write it in NumPy, then ask PyTorch for the same thing, and compare. We work in
# `float64` (double precision) when comparing, so that any difference we see is a real
# mistake and not rounding.

# %%
import torch

x = rng.standard_normal((4, 3))          # a batch of 4 examples with 3 features
w = rng.standard_normal((2, 3))          # 2 outputs; PyTorch's layout is (out, in)
b = rng.standard_normal(2)

y_numpy = x @ w.T + b                    # by hand

layer = torch.nn.Linear(3, 2).double()   # the PyTorch way
with torch.no_grad():
    layer.weight.copy_(torch.from_numpy(w))
    layer.bias.copy_(torch.from_numpy(b))
y_torch = layer(torch.from_numpy(x)).detach().numpy()

print("largest difference below 1e-12:", np.abs(y_numpy - y_torch).max() < 1e-12)

# %% [markdown]
# ## 4 · The GPU
#
# `dlcourse.device()` picks the fastest device available: an NVIDIA GPU (`"cuda"`),
# an Apple GPU (`"mps"`), or the CPU. Every PyTorch part of the course moves its
# tensors there, so the same notebook runs on your laptop and on a Colab GPU. Chapters
# use more data and more training epochs by themselves when they find a GPU.
#
# **On Colab:** *Runtime → Change runtime type → GPU*, then run the notebook from the top.

# %%
# NBVAL_IGNORE_OUTPUT
print("this notebook's PyTorch device:", dlcourse.device())

# %% [markdown]
# On a CPU, the course uses **one compute thread** per library by default: at the small
# sizes of a course, coordinating several threads costs more than it saves (the
# measurements are in `benchmarks/RESULTS.md`). Set the environment variable
# `DLCOURSE_THREADS` to change that.

# %% [markdown]
# ## 5 · Exercises and checks
#
# An exercise gives you a function to complete. Under it sits a **check cell**: it runs
# your function on several inputs, compares with the course's reference, and answers
# with ✓ or ✗, the points, and *one precise message* about what is wrong. A check never
# crashes your notebook and never hangs (it stops code that runs too long), so
# *Run All* always reaches the score table at the end.
#
# Let us see one in action. Below is a tiny practice checker (not graded) for a
# function `double(x)` that should return `2 * x` for an array `x`.

# %%
from dlcourse.grading import Checker, call, expect_close

practice = Checker("00_welcome", name="practice")


@practice.exercise(points=1, hints=["Multiply the array by 2.", "return 2 * x"])
def double(fn):
    for x in (np.arange(3.0), np.array([[1.5, -2.0], [0.0, 4.0]])):
        expect_close(call(fn, x), 2 * x, f"double(x) for x of shape {x.shape}")
    return "doubles a vector and a matrix"


# %% [markdown]
# First, the state every exercise starts in: a stub that has not been written yet.

# %%
def double(x):
    raise NotImplementedError()


practice.double(double)

# %% [markdown]
# A plausible mistake: returning a flattened array. The check says exactly what is wrong.

# %%
def double(x):
    return (2 * x).ravel()


practice.double(double)

# %% [markdown]
# Another: changing the caller's array in place. Functions in this course never modify
# their inputs, and the checks notice when they do.

# %%
def double(x):
    x *= 2
    return x


practice.double(double)

# %% [markdown]
# Stuck? Ask for a hint; ask again for the next one.

# %%
practice.hint("double")

# %% [markdown]
# And finally the right answer:

# %%
def double(x):
    return 2 * x


practice.double(double)

# %% [markdown]
# At the end of every exercise notebook, the score table sums up where you stand:

# %%
practice.scoreboard()

# %% [markdown]
# ## 6 · Saving and handing in your work
#
# **On your own machine** the notebooks are files in the course folder: *File → Save
# Notebook* (Ctrl+S, or ⌘S on a Mac) writes your answers into `exercises/NN_topic.ipynb`,
# and that file is what you hand in.
#
# **On Colab** a notebook opened from a badge lives only in your browser session: when the
# session ends, your changes are gone. So:
#
# * to keep working another day: *File → Save a copy in Drive*, and open that copy next time;
# * to hand in: *File → Download → Download .ipynb*, and submit the downloaded file.
#
# Either way, before you hand in, run the notebook once from a fresh start (*Kernel → Restart
# Kernel and Run All Cells* in JupyterLab, *Runtime → Restart session and run all* on Colab)
# and look at the score table at the end: the grader runs your notebook exactly like that.
# Name the file after the chapter, `01_neurons.ipynb` (rename a `Copy of 01_neurons.ipynb`;
# the ` (1)` a browser adds is fine), so the grader knows which chapter's checks to run.

# %% [markdown]
# ## 7 · Grading (for instructors)
#
# Learners hand in their exercise notebooks. The grader runs each one in a fresh Python
# kernel, with a time limit per cell, then runs the chapter's checks itself on the
# functions the notebook defined — so what a notebook *printed* never counts:
#
# ```bash
# python -m dlcourse.grade submissions/*/01_neurons.ipynb --csv grades.csv
# ```
#
# ## 8 · Where to go next
#
# Open `chapters/01_neurons.ipynb`: what a single artificial neuron computes, why it
# needs a non-linear activation, and how a few of them together solve a problem no
# straight line can. Then try `exercises/01_neurons.ipynb`.
#
# Something not working on your machine? In a terminal, in the course folder, run
# `python -m dlcourse.doctor`: it checks your set-up line by line, and the README's
# *Troubleshooting* section says what to do with its answer.
