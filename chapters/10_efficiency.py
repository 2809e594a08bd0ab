# %% [markdown]
# # 10 · Efficiency and scale: measure the cost, cut it, and train on more than one process
#
# Deep learning is expensive: every prediction costs arithmetic, memory traffic, time and energy,
# and training costs all of them millions of times over. This chapter first **measures** what a
# model costs, then cuts the cost four ways and measures what each cut keeps of the accuracy:
#
# 1. **Measure**: parameters, bytes, FLOPs counted by hand and by PyTorch's counter, latency at
#    batch 1 and 256, where the time goes (`torch.profiler`), and an energy estimate.
# 2. **Prune**: set the smallest weights to zero (unstructured) or remove whole neurons
#    (structured), with and without retraining — and see which of the two actually runs faster.
# 3. **Quantize**: store weights as 8-bit (or fewer) integers — by hand in NumPy, equal to
#    PyTorch's own quantization ops — and PyTorch's dynamic int8 on a real model.
# 4. **Distil**: a small student learns from a big teacher's soft answers.
# 5. **Lower precision and compile**: bfloat16 autocast and `torch.compile`, where they win and
#    where float16 fails.
#
# Then training leaves one process: **data-parallel** training on PyTorch's own distributed engine
# (two processes on this machine, the `gloo` backend) gives the weights of one process on the same
# global batch, equal up to round-off; a NumPy simulation of **ring all-reduce** shows how the gradients meet;
# gradient accumulation is the one-GPU stand-in; **federated averaging** is the variant where the
# data cannot move.

# %%
import time
import warnings

import numpy as np
import torch

import dlcourse
from dlcourse.data import load_digits
from dlcourse.efficiency import distributed as ed        # DistributedDataParallel on 2 processes
from dlcourse.efficiency import explore
from dlcourse.efficiency import numpy_impl as en         # every idea by hand in NumPy
from dlcourse.efficiency import torch_impl as et         # the same on real PyTorch models

rng = dlcourse.seed(0)
device = dlcourse.device()
lesson_start = time.perf_counter()
digits = load_digits()
x_test, y_test = digits.x_test, digits.y_test             # (270, 64) in [0, 1], (270,)
print(f"device: {device}; digits: {len(digits.x_train)} training, {len(x_test)} test images of 8 × 8 pixels")


def max_diff(a, b):
    """Largest absolute difference between two arrays, NumPy or torch."""
    a, b = (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for v in (a, b))
    return float(np.max(np.abs(a - b)))


# %% [markdown]
# ## 1 · The model we will shrink, and what it costs
#
# The subject is a digits MLP, 64 → 256 → 256 → 10 with ReLUs: bigger than it needs to be, like most
# deployed models, so there is something to cut. Chapter 05's small CNN comes along for the
# convolution counts and for `torch.compile`. Both are trained here in seconds.

# %%
# NBVAL_IGNORE_OUTPUT
start = time.perf_counter()
mlp, cnn = et.digits_mlp(0), et.digits_cnn(0)
dense_acc = et.accuracy(mlp, x_test, y_test)
print(f"trained in {time.perf_counter() - start:.1f} s; test accuracy: MLP {dense_acc:.1%}, "
      f"CNN {et.accuracy(cnn, x_test, y_test):.1%}")
print(mlp)

# %% [markdown]
# ### Counting parameters and FLOPs by hand
#
# A dense layer `Linear(D, H)` holds D·H weights and H biases. On one example it does D·H
# **multiply-adds** (MACs): each of the H outputs is a dot product of length D. We count one
# multiply-add as **2 FLOPs** (a multiply and an add) and, like PyTorch's `FlopCounterMode`, count only
# the matrix products (the bias adds and ReLUs are a rounding error next to them).
#
# A convolution `Conv2d(C_in, C_out, (kH, kW), stride, pad)` holds C_out·C_in·kH·kW weights and
# C_out biases. Each output value is a dot product of length C_in·kH·kW, and there are
# C_out·H_out·W_out of them, where H_out = ⌊(H_img + 2·pad − kH) / stride⌋ + 1 (and the same for W).
# So the same weights cost more FLOPs on a bigger image — a convolution's cost lives in its output
# size, a dense layer's in its weight count. (Writing this count is the first exercise.)

# %%
n_params = et.count_params(mlp)
by_hand = en.model_cost([("dense", 64, 256), ("dense", 256, 256), ("dense", 256, 10)])
x1 = torch.as_tensor(x_test[:1])
print(f"MLP: {n_params:,} parameters (by hand {by_hand.params:,}); "
      f"FLOPs per example by hand {by_hand.flops:,}, by FlopCounterMode {et.flops(mlp, x1):,}")
print(f"size: {et.model_bytes(mlp):,} bytes serialized; {4 * n_params:,} bytes of float32 numbers")
cnn_flops = et.flops(cnn, x1)
print(f"CNN: {et.count_params(cnn):,} parameters but {cnn_flops:,} FLOPs per example "
      f"({cnn_flops / et.count_params(cnn):.1f} FLOPs per parameter; the MLP: "
      f"{by_hand.flops / n_params:.1f})")

# %% [markdown]
# ### Time, and where it goes
#
# FLOPs are not time. At batch 1 the MLP does 0.17 MFLOPs — a few microseconds of arithmetic — but
# each layer is a separate call through Python, PyTorch's *dispatcher* (the C++ layer that picks the
# kernel for a tensor's device and type) and a *BLAS* kernel (the tuned matrix-product library), and
# those fixed costs dominate. At batch 256 the same calls do 256 times the work. The profiler lists every
# operator's own ("self") time and how often it ran, so you know what to attack first. At batch 1
# each operator takes microseconds, so the ranking moves from run to run, and operators that do no
# arithmetic at all (`aten::t` transposes a weight, `aten::linear` dispatches, `as_strided` makes a
# view) sit next to the matrix products (`aten::addmm`): that is per-call overhead. (Two lines
# starting with `USDT` on stderr, if you see them, are the profiler announcing itself.)
#
# An **energy estimate** multiplies time by a power draw. We did not measure the power: we assume
# 15 W for a laptop processor (`et.CPU_WATTS`; an H100 is specified at up to 700 W). Treat the
# joules as an order of magnitude, and measure when it matters (Intel's RAPL energy counters on a
# CPU, `nvidia-smi` on an NVIDIA GPU).

# %%
# NBVAL_IGNORE_OUTPUT
x256 = torch.as_tensor(np.resize(x_test, (256, 64)))
t1, t256 = et.latency(mlp, x1), et.latency(mlp, x256)
print(f"latency: batch 1 {t1 * 1e6:.0f} µs, batch 256 {t256 * 1e6:.0f} µs "
      f"→ {256 * t1 / t256:.0f}× more examples per second at 256 ({et.throughput(mlp, x256):,.0f} /s)")
et.profile(mlp, x1, repeats=5)                              # the profiler's own first start-up, not timed
prof = et.profile(mlp, x1, repeats=50)
print(f"batch 1, the operators with the most self time (one forward pass takes {t1 * 1e6:.0f} µs in all):")
for name, us, calls in prof.top[:5]:
    print(f"  {name:<28} {us / calls:6.1f} µs per call, {calls // 50} calls per forward pass")
e = et.energy_estimate(t256 / 256 * 1_000_000)
print(f"one million predictions at batch 256: {e['seconds']:.1f} s ≈ {e['joules']:.0f} J at an assumed {e['watts']:.0f} W")

# %% [markdown]
# ## 2 · Pruning: most weights are not needed
#
# **Magnitude pruning** (Han et al., 2015) bets that small weights matter little: zero the fraction
# *s* of weights with the smallest |w|, keep a 0/1 **mask** so they stay zero, and (optionally)
# retrain the survivors to take over. Two choices matter:
#
# * **global** (one threshold over all layers) or **per layer** (the same fraction in each): global
#   lets the layer with the most redundant weights give up the most — below, the big 256 × 256
#   layer loses 94 % and the first and last layers less;
# * prune **weights only**: biases are few and each one shifts a whole neuron.
#
# (Writing global pruning is an exercise; here we call the course's version.)

# %%
weights = {k: v.detach().double().numpy() for k, v in mlp.state_dict().items() if k.endswith("weight")}
for scope in ("global", "layer"):
    masks = en.magnitude_masks(weights, 0.9, scope=scope)
    overall, per_layer = en.sparsity(weights, masks)
    print(f"{scope:>6}: overall sparsity {overall:.1%}; per layer " +
          ", ".join(f"{k} {v:.1%}" for k, v in per_layer.items()))

# %% [markdown]
# Accuracy against sparsity, right after pruning and after 300 steps of retraining with the mask
# held (the optimizer would otherwise move pruned weights off zero; `et.train(..., masks=...)`
# re-applies the mask after every step):

# %%
# NBVAL_IGNORE_OUTPUT
start = time.perf_counter()
curve = et.pruning_curve((0.0, 0.5, 0.8, 0.9, 0.95, 0.98), retrain_steps=300)
print(f"({time.perf_counter() - start:.1f} s)  sparsity   pruned   retrained   weights left (biases not counted)")
for s, a, r, nz in zip(curve["sparsity"], curve["pruned"], curve["retrained"], curve["nonzero"]):
    print(f"{'':>10}{s:8.0%}  {a:7.1%}  {r:10.1%}  {nz:>10,}")
i90 = list(curve["sparsity"]).index(0.9)
print(f"90 % sparsity + retraining: {curve['retrained'][i90]:.1%}; the dense model {curve['dense']:.1%}, "
      f"and {curve['retrained'][0]:.1%} after the same 300 extra steps "
      f"({100 * (curve['retrained'][i90] - curve['retrained'][0]):+.1f} points)")

# %% [markdown]
# ### Does a sparse model run faster?
#
# Not by itself. A pruned weight matrix is still stored and multiplied as a dense matrix: the zeros
# are multiplied like any other number, so the dense kernel takes the same time. A sparse format
# (`torch.sparse_csr`, *compressed sparse rows*: the nonzeros of each row with their column indices)
# skips the zeros but pays for an index per weight and irregular memory access: whether it wins
# depends on the sparsity, the matrix sizes and the hardware (GPU kernels need very high sparsity, or
# NVIDIA's structured "2:4" pattern — 2 zeros in every 4 weights — to gain). **Structured** pruning removes whole neurons instead: the
# result is a smaller *dense* network, which every kernel runs faster. At batch 256 (the accuracies are right after pruning, no
# retraining; "weights" counts every nonzero parameter, biases included):

# %%
# NBVAL_IGNORE_OUTPUT
rows = et.pruning_latency(batch=256, sparsity=0.9, fraction=0.5)
base = rows[0]["seconds"]
for r in rows:
    print(f"{r['name']:<40} {r['seconds'] * 1e6:8.0f} µs  ({base / r['seconds']:4.2f}× dense speed)  "
          f"{r['params']:>7,} weights  accuracy {r['accuracy']:.1%}")

# %% [markdown]
# ## 3 · Quantization: fewer bits per number
#
# A float32 weight costs 32 bits. **Affine quantization** (Jacob et al., 2018) maps a range of
# real numbers [min, max] onto the integers 0 … 2^b − 1 with a **scale** and an integer **zero
# point**:
#
# $$q = \mathrm{clamp}\big(\mathrm{round}(x / \text{scale}) + \text{zero\_point},\ 0,\ 2^b - 1\big),
# \qquad \hat x = (q - \text{zero\_point}) \cdot \text{scale}.$$
#
# The scale spreads the range over the 2^b − 1 steps between the integers, so it comes from
# max − min; the range is first stretched to include 0, and the zero point is the *integer* that
# 0 maps to — so 0 (padding, ReLU outputs, pruned weights) is represented exactly. Inside the range
# every value lands within scale / 2 of itself. **Per channel** gives every output row its own
# scale and zero point: a row of small weights is not forced onto the grid of the largest row.
# (The quantizer is an exercise; here is what it does to the MLP's first layer.)

# %%
w0 = weights["0.weight"]                                      # (256, 64)
for axis, name in ((None, "per tensor"), (0, "per channel")):
    scale, zp = en.qparams(w0, bits=8, axis=axis)
    err = en.quantization_error(w0, bits=8, axis=axis)
    print(f"{name:>12}: scale {np.min(scale):.2e} … {np.max(scale):.2e}, zero points "
          f"{np.min(zp)} … {np.max(zp)}; error max {err.max_abs:.1e}, RMS {err.rms:.1e}")

# %% [markdown]
# The NumPy quantizer gives exactly PyTorch's integers (`torch.quantize_per_channel` with the same
# scales and zero points), and the fake-quantization used for training — quantize then dequantize in
# float, with the **straight-through estimator** as its gradient (round's true derivative is 0
# almost everywhere; the STE passes the gradient through inside the range and blocks it where the
# value was clamped) — matches `torch.fake_quantize_per_tensor_affine` forward and backward:

# %%
w32 = w0.astype(np.float32)                                   # torch's quantized tensors are float32
scale, zp = en.qparams(w32, bits=8, axis=0)
q_np = en.quantize(w32, scale, zp, bits=8, axis=0)
with warnings.catch_warnings():           # torch 2.10+ deprecates its quantized tensor types (torchao replaces them)
    warnings.simplefilter("ignore", UserWarning)
    q_t = torch.quantize_per_channel(torch.as_tensor(w32), torch.as_tensor(scale), torch.as_tensor(zp),
                                     axis=0, dtype=torch.quint8)
print("integers equal to torch.quantize_per_channel:", np.array_equal(q_np, q_t.int_repr().numpy()))
print("dequantized, largest difference:",
      max_diff(en.dequantize(q_np, scale, zp, axis=0, dtype=np.float32), q_t.dequantize()))

s0, z0 = en.qparams(w0, bits=4)                               # one scale, a coarse 4-bit grid
wide = w0 * 1.5                                              # stretched: some values fall outside the range
x = torch.as_tensor(wide, dtype=torch.float32).requires_grad_()
fq = torch.fake_quantize_per_tensor_affine(x, float(s0), int(z0), 0, 15)
dout = rng.normal(size=w0.shape)
fq.backward(torch.as_tensor(dout, dtype=torch.float32))
out_np, cache = en.fake_quant_forward(wide.astype(np.float32), float(s0), int(z0), 0, 15)
clamped = int(np.sum(en.fake_quant_backward(np.ones_like(w0), cache) == 0))
print(f"fake quant vs torch (float32, torch's kernel computes in float32): forward {max_diff(out_np, fq):.1e}, "
      f"STE gradient {max_diff(en.fake_quant_backward(dout, cache), x.grad):.1e}; "
      f"{clamped:,} of {w0.size:,} values were clamped (gradient 0 there)")

# %% [markdown]
# ### How few bits?
#
# Weight-only quantization of the whole MLP, accuracy against bits. On this small model both schemes
# hold down to 3–4 bits; at 2 bits — four levels per row — per channel keeps noticeably more than
# per tensor. (270 test images: a gap under one point is 1–3 images, within noise.) Then quantization-aware training (QAT): fine-tune with the 2-bit fake
# quantization in the forward pass (the STE carries the gradient) against post-training
# quantization (PTQ) of the same model — and, as a control, against the same number of plain
# fine-tuning steps before quantizing (so that a gain is not just more training).

# %%
# NBVAL_IGNORE_OUTPUT
bc = et.bits_curve((8, 6, 4, 3, 2))
print(f"float32: {bc['float']:.1%}")
for b, pt, pc in zip(bc["bits"], bc["per_tensor"], bc["per_channel"]):
    print(f"{b} bits: per tensor {pt:6.1%}   per channel {pc:6.1%}")
qat = et.qat_study(bits=2, steps=300)
print(f"2 bits per channel: post-training {qat['ptq']:.1%}; 300 steps of quantization-aware training "
      f"{qat['qat']:.1%}; control, 300 plain steps then quantized {qat['finetuned_then_ptq']:.1%} (float {qat['float']:.1%})")

# %% [markdown]
# ### PyTorch's dynamic int8 on a real model
#
# **Dynamic quantization** stores the Linear weights as int8 and quantizes each batch's
# activations on the fly (their range is measured per batch — hence "dynamic"), so the matrix product
# runs on integers. It is post-training, needs no data, and runs on the CPU. Each call pays a fixed
# cost (measure the range, quantize, multiply, rescale), so it can only pay off on big batches — and
# whether it does depends on the CPU's integer units (on the course machine it has measured from
# 0.75× to 2× at batch 256 from run to run; it was always slower at batch 1). (PyTorch is moving
# this API, `torch.ao.quantization`, to the separate `torchao` library; `et.dynamic_int8` silences
# the deprecation warning and its docstring says where to go next.)

# %%
# NBVAL_IGNORE_OUTPUT
q8 = et.dynamic_int8(mlp)
size_ratio = et.model_bytes(mlp) / et.model_bytes(q8)
int8 = dict(acc=et.accuracy(q8, x_test, y_test), t1=et.latency(q8, x1), t256=et.latency(q8, x256))
print(f"size {et.model_bytes(mlp):,} → {et.model_bytes(q8):,} bytes ({size_ratio:.2f}× smaller); "
      f"accuracy {dense_acc:.1%} → {int8['acc']:.1%}")
for batch, t_fp, t_q in ((256, t256, int8["t256"]), (1, t1, int8["t1"])):
    verdict = "faster" if t_q < t_fp else "SLOWER: the fixed cost of each quantized call outweighs the cheaper arithmetic"
    print(f"batch {batch:>3}: {t_fp * 1e6:5.0f} → {t_q * 1e6:5.0f} µs ({t_fp / t_q:.2f}×, {verdict})")

# %% [markdown]
# ## 4 · Distillation: a small student taught by a big teacher
#
# A trained classifier knows more than its top answer: its probabilities say that this 3 looks a
# little like an 8 and nothing like a 1. **Knowledge distillation** (Hinton et al., 2015) trains a
# small student to match the teacher's probabilities, softened by a **temperature** T (softmax of
# logits / T; T > 1 lifts the small probabilities where that knowledge lives):
#
# $$L = \alpha\, T^2\, \mathrm{KL}\big(\mathrm{softmax}(t/T)\ \|\ \mathrm{softmax}(s/T)\big)
#       + (1-\alpha)\, \mathrm{CE}(s, y).$$
#
# Why T²? The soft term's gradient with respect to the student's logits is
# (softmax(s/T) − softmax(t/T)) / T: the 1/T comes from the chain rule through s/T, and the
# difference of two softened distributions itself shrinks roughly like 1/T for large T. Multiplying by
# T² keeps the soft term's pull comparable to the hard term's whatever T is, so α means the same at
# every temperature. (Writing the loss and its gradient is an exercise.) The NumPy loss and gradient
# agree with PyTorch's autograd, and the soft gradient's size without T² falls with T:

# %%
s_log, t_log = rng.normal(size=(32, 10)) * 3, rng.normal(size=(32, 10)) * 3
y_lab = rng.integers(0, 10, size=32)
s_t = torch.as_tensor(s_log).requires_grad_()
loss_t = et.distill_loss(s_t, torch.as_tensor(t_log), torch.as_tensor(y_lab), T=4.0, alpha=0.9)
loss_t.backward()
loss_np, cache = en.distill_loss_forward(s_log, t_log, y_lab, T=4.0, alpha=0.9)
print(f"loss NumPy {loss_np:.6f}, PyTorch {loss_t.item():.6f}; gradient difference "
      f"{max_diff(en.distill_loss_backward(cache), s_t.grad):.1e}")
for T in (1, 2, 4, 8, 16):
    g = [np.linalg.norm(en.distill_loss_backward(en.distill_loss_forward(s_log, t_log, y_lab, T=T, alpha=1.0,
                                                                         t_squared=sq)[1])) for sq in (False, True)]
    print(f"T = {T:>2}: soft-gradient norm without T² {g[0]:.2e}, with T² {g[1]:.2e}")

# %% [markdown]
# When does it help? A 64 → 32 → 10 student (1/35 of the teacher's parameters), trained on only
# 100 labelled digits, alone or with the teacher's soft targets on all 1,257 training images; then
# the same with all the labels. (The student never sees the other 1,157 labels — but the teacher was
# trained on them, so their information reaches it through the teacher's answers. That is the
# realistic case: a big model trained once on everything, a small one for deployment.)

# %%
# NBVAL_IGNORE_OUTPUT
start = time.perf_counter()
study = et.distillation_study((100, 1257))
for r in study:
    print(f"{r['n_labels']:>5} labels: student alone {r['alone']:.1%}, distilled {r['distilled']:.1%} "
          f"(teacher {r['teacher']:.1%})")
print(f"({time.perf_counter() - start:.1f} s)")

# %% [markdown]
# With few labels the teacher's answers on the other images are extra (soft) labels, and distillation
# helps most; with every label the student already sees everything the teacher saw, and the gain
# mostly disappears.
#
# ## 5 · Lower precision, and compiling
#
# **bfloat16** keeps float32's 8 exponent bits and drops mantissa bits (7 left): the same range, less
# precision. **float16** has 5 exponent bits: more precision than bf16, but nothing above 65,504 and
# nothing below ~6·10⁻⁸ (Micikevicius et al., 2018). `torch.autocast` runs the matrix products in the
# low precision and keeps sums and losses in float32. Whether that is *faster* depends on the
# hardware: GPUs since the A100 and Intel CPUs with AMX or AVX512-BF16 instructions multiply bf16
# natively (planning this chapter on such a CPU measured 3× for this MLP); a CPU without them
# converts every operand and is *slower*. (AMX, *Advanced Matrix Extensions*, are the matrix units of
# Intel's Xeons since 2023.) What this CPU has, then MLP inference at batch 256:

# %%
# NBVAL_IGNORE_OUTPUT
native = {name: getattr(torch.cpu, f, lambda: False)() for name, f in
          (("AVX512-BF16", "_is_avx512_bf16_supported"), ("AMX", "_is_amx_tile_supported"))}
print(f"vector unit seen by PyTorch: {torch.backends.cpu.get_cpu_capability()}; native bf16: "
      + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in native.items()))
amp = et.autocast_speedup(mlp, x256, dtype=torch.bfloat16)
print(f"bf16 autocast: {amp['fp32_s'] * 1e6:.0f} → {amp['autocast_s'] * 1e6:.0f} µs ({amp['speedup']:.1f}×), "
      f"predictions agree on {amp['agreement']:.1%}, logits differ by up to {amp['max_abs_diff']:.2f}")

# %% [markdown]
# Where float16 fails: a value above 65,504 becomes infinity, and in training the small gradients
# **underflow** to zero. **Loss scaling** multiplies the loss by a large factor before the backward
# pass (so the gradients are representable) and divides the gradients by it afterwards;
# `torch.amp.GradScaler` picks the factor and skips a step whose gradients overflowed. bf16 needs
# none of this (its range is float32's), which is why it is the default on recent hardware.

# %%
ov = et.overflow_demo()
print(f"float16(70000) = {ov['logit']}; a sum of 1,000 squares of 10 in float16 = {ov['sum_of_squares']}")
print(f"weight-gradient norm: float32 {ov['fp32_grad_norm']:.2e}; float16 {ov['fp16_grad_norm']:.2e} "
      f"({ov['fp16_zero_fraction']:.0%} of the activation gradients are 0); with loss scaling "
      f"{ov['scaled_grad_norm']:.2e} ({ov['scaled_zero_fraction']:.0%} zero, "
      f"relative error {ov['scaled_rel_error']:.0e})")

# %% [markdown]
# **`torch.compile`** traces the model into a graph and generates fused kernels for it (on the CPU,
# C++ compiled on the spot). The first call pays for the compilation; later calls skip Python's
# per-layer overhead. On the CNN at batch 256:

# %%
# NBVAL_IGNORE_OUTPUT
for mode in ("inference", "training"):                     # (the CNN reshapes x256's rows into 8 × 8 images)
    c = et.compile_study(cnn, x256, mode=mode, y=np.resize(y_test, 256))
    if c["ok"]:
        print(f"{mode:>9}: first call {c['first_call_s']:.1f} s; then {c['eager_s'] * 1e3:.2f} → "
              f"{c['compiled_s'] * 1e3:.2f} ms per call ({c['speedup']:.2f}×)")
    else:
        print(f"{mode:>9}: {c['message']}")

# %% [markdown]
# Compilation pays when the same shapes run many times (serving, long training runs); for a short
# experiment the first call can cost more than it saves, and on a model this small on a CPU the
# gain is modest — training can even be slower (the compiled backward adds overheads of its own).
# The first compilation in a process also pays for starting the compiler (imports, checking the C++
# tool chain), which is why the second "first call" above is much shorter. `mode="max-autotune"` and CUDA graphs go
# further on a GPU.
#
# ## 6 · The results table
#
# Every variant of the MLP, measured in this run (latency medians; "weights" counts the nonzero
# parameters, biases included; energy per million predictions at batch 256, at the assumed 15 W).
# The pruned model runs the same dense kernels as the dense one, so its size and time are the dense
# model's by construction; the structured row is not retrained; the bf16 row's time and energy are
# those of a CPU that emulates bf16 (see above).

# %%
# NBVAL_IGNORE_OUTPUT
pruned90 = curve["retrained"][i90]
students = {r["n_labels"]: r for r in study}
structured = next(r for r in rows if r["name"].startswith("structured"))
n_bias = sum(v.numel() for k, v in mlp.state_dict().items() if k.endswith("bias"))
student = et.student_mlp(32)
table = [
    ("dense float32", et.count_params(mlp), et.model_bytes(mlp), t1, t256, dense_acc),
    ("90 % pruned + retrained (dense kernels)", int(curve["nonzero"][i90]) + n_bias, et.model_bytes(mlp), t1, t256,
     pruned90),
    (structured["name"] + ", no retraining", structured["params"], None, None, structured["seconds"],
     structured["accuracy"]),
    ("dynamic int8", n_params, et.model_bytes(q8), int8["t1"], int8["t256"], int8["acc"]),
    ("bf16 autocast", n_params, et.model_bytes(mlp), None, amp["autocast_s"], None),
    ("student 64-32-10, distilled", et.count_params(student), et.model_bytes(student),
     et.latency(student, x1), et.latency(student, x256), students[1257]["distilled"]),
]
print(f"{'variant':<56}{'weights':>9}{'bytes':>10}{'batch 1':>10}{'batch 256':>11}{'accuracy':>10}{'J / 1M':>8}")
for name, p, b, l1, l256, acc in table:
    cell = lambda v, f: format(v, f) if v is not None else "–"
    joules = et.energy_estimate(l256 / 256 * 1e6)["joules"] if l256 else None
    print(f"{name:<56}{p:>9,}{cell(b, ',') :>10}{cell(l1 and l1 * 1e6, '.0f') + ' µs':>10}"
          f"{cell(l256 * 1e6, '.0f') + ' µs':>11}{cell(acc, '.1%'):>10}{cell(joules, '.0f'):>8}")

# %% [markdown]
# ## 7 · Explore the trade-off
#
# Move the sliders: magnitude pruning (sparsity, global or per layer) and weight quantization (bits,
# per channel or per tensor, or float32) applied to the trained MLP *after* training, the point
# showing its test accuracy against its size. The size counts `bits` per kept weight, a 1-bit map of
# which weights are kept, a scale and zero point per row (or per tensor), and float32 biases. The
# curve "pruning + 300 steps of retraining (measured)" is the retrained accuracy measured above:
# retraining moves the cliff far to the left. Which combination is smallest at 97 %?

# %%
# NBVAL_IGNORE_OUTPUT
params64 = {k: v.detach().double().numpy() for k, v in mlp.state_dict().items()}   # the MLP, for NumPy
sizes_retrained = []
for s in curve["sparsity"]:                      # the size of each retrained point, counted like the explorer's
    masks = en.magnitude_masks(weights, s) if s > 0 else None
    sizes_retrained.append(explore.storage_bytes(params64, masks))
explore.tradeoff_explorer(params64, x_test, y_test,
                          measured={"pruning + 300 steps of retraining (measured)":
                                    (sizes_retrained, curve["retrained"])})

# %% [markdown]
# ## 8 · Data-parallel training
#
# One process holds the whole model and sees the whole batch. **Data parallelism** runs P copies of
# the model (on P GPUs, or here P processes), gives each a 1/P **shard** of every global batch, and
# before each step **averages the gradients** across the copies. Since the loss is a mean over the
# batch, the average of the P shard means (equal shards) *is* the global batch's mean gradient — so
# every copy takes exactly the step one process would take on the whole batch, and the copies stay
# identical. Three classic ways to break it: **summing** instead of averaging (a P× larger step),
# giving every worker the **same shard** (workers seeded identically: the run sees 1/P of the data),
# and forgetting that unequal shards need a weighted mean.
#
# ### Ring all-reduce, simulated
#
# How do P workers average their gradients? Through one root, the root receives (P − 1)·S bytes
# and sends the average back to each, (P − 1)·S again. The **ring all-reduce** (Patarasuk & Yuan, 2009) cuts each gradient into P chunks
# and passes chunks around a ring: P − 1 steps of **reduce-scatter** (each worker ends with the full
# sum of one chunk), then P − 1 steps of **all-gather** (the summed chunks travel round). Every
# worker sends 2(P − 1)/P · S bytes — below 2·S whatever P (at P = 2 the two schemes send the same).
# (Writing it is an exercise.)

# %%
grads = [rng.normal(size=10) for _ in range(4)]
result, trace = en.ring_allreduce(grads, average=True, trace=True)
print(f"P = 4 workers, 10 numbers each: {len(trace.steps)} steps; every worker holds the mean: "
      f"{all(np.allclose(r, np.mean(grads, axis=0)) for r in result)}")
for st in trace.steps[:4]:
    print(f"  {st.phase} step {st.step}: " + ", ".join(f"{src}→{dst} chunk {c}" for src, dst, c, _ in st.sends))
print("  …")
sizes = 1_000_000
for P in (2, 4, 8, 16):
    _, ring = en.ring_allreduce([np.zeros(sizes, np.float32)] * P, trace=True)
    _, naive = en.naive_allreduce([np.zeros(sizes, np.float32)] * P, trace=True)
    print(f"P = {P:>2}: bytes sent by the busiest worker for 4 MB of gradients: ring {max(ring.bytes_sent) / 1e6:5.1f} MB, "
          f"through one root {max(naive.bytes_sent) / 1e6:5.1f} MB")

# %% [markdown]
# The NumPy simulation of P workers running SGD with the ring all-reduce equals one process step for
# step — and summing instead of averaging does not:

# %%
params0 = en.mlp_init([64, 32, 10], seed=0)
xs, ys = digits.x_train.astype(np.float64), digits.y_train
one = en.sgd(params0, xs, ys, steps=20, lr=0.5, batch=96, seed=0)
par = en.data_parallel_sgd(params0, xs, ys, workers=4, steps=20, lr=0.5, batch=96, seed=0)
print(f"4 simulated workers vs one process, 20 steps: largest weight difference "
      f"{max(max_diff(par.params[k], one.params[k]) for k in one.params):.1e}")
summed = en.data_parallel_sgd(params0, xs, ys, workers=4, steps=20, lr=0.5, batch=96, seed=0,
                              allreduce=lambda a, average, trace: en.ring_allreduce(a, average=False, trace=trace))
print(f"summing instead of averaging: difference {max(max_diff(summed.params[k], one.params[k]) for k in one.params):.2f}")

# %% [markdown]
# ### The real thing: DistributedDataParallel on two processes
#
# `torch.distributed` starts P processes that find each other at a rendezvous (across machines an
# address and port, `MASTER_ADDR:MASTER_PORT`; here, on one machine, a file in a temporary folder)
# and talk through a **backend**: `gloo` on CPUs, `nccl` between NVIDIA GPUs. `DistributedDataParallel` wraps the model, and during `backward()` it all-reduces the
# gradients in buckets while the rest of the backward pass is still running (Li et al., 2020), then
# every process steps its own optimizer on identical averaged gradients. `ed.ddp_train` spawns two
# processes, each trains on its half of every global batch of 64, and rank 0 returns its weights;
# `ed.single_process_train` trains the same model on the same global batches in this process. Two
# broken runs go with it: every worker given the same shard, and — since DDP itself always averages —
# a run that all-reduces the gradients by hand (`sync="manual"`) and forgets to divide by P:

# %%
# NBVAL_IGNORE_OUTPUT
start = time.perf_counter()
ddp, same, summed_ddp = ed.ddp_train_many([dict(steps=20), dict(steps=20, same_shard=True),
                                           dict(steps=20, sync="manual", average=False)])
ref = ed.single_process_train(steps=20)
diff = lambda r: max(max_diff(r["state"][k], ref["state"][k]) for k in ref["state"])
print(f"2 processes (gloo) in {time.perf_counter() - start:.1f} s, spawning included; the ranks agree: {ddp['ranks_agree']}")
print(f"DDP vs one process, float64, 20 steps: largest weight difference {diff(ddp):.1e}")
print(f"every worker on the same shard: {diff(same):.2e};  summed, not averaged: {diff(summed_ddp):.2e}")
print(f"training loop alone: 2 processes {ddp['seconds']:.2f} s, one process {ref['seconds']:.2f} s")

# %% [markdown]
# On one GPU, **gradient accumulation** gives the same step from several small micro-batches (add up
# their gradients, weighted so that the total is the big batch's mean, then step once): the memory
# of a small batch, the mathematics of a big one.

# %%
acc4 = ed.grad_accumulation_train(accum_steps=4, steps=20)
print(f"4 micro-batches of 16 vs one batch of 64, 20 steps: largest weight difference "
      f"{max(max_diff(acc4['state'][k], ref['state'][k]) for k in ref['state']):.1e}")

# %% [markdown]
# On GPUs and on several machines the code stays the same; what changes is how it is launched
# (`torchrun` starts one process per GPU and sets `RANK`, `LOCAL_RANK`, `WORLD_SIZE`), the backend
# (`nccl`), and that each process binds its own GPU:

# %%
print(ed.launch_commands())

# %% [markdown]
# On a CPU with few cores the two processes are not faster (compare the training-loop times above):
# they share the same cores, and each step now waits for the all-reduce. Data parallelism pays when each worker has its own
# accelerator and the computation per step outweighs the communication.
#
# ### Federated averaging: when the data cannot move
#
# Hospitals or phones cannot ship their data to one place. **Federated averaging** (McMahan et al.,
# 2017) sends the *model* instead: each client trains a few local steps on its own data, the server
# averages the returned weights (weighted by client size), and sends the average back. With one
# full-batch local step per round it is exactly large-batch SGD; with several local steps it saves
# communication — and when each client holds different classes (non-IID), each local model drifts
# towards its own classes between averagings, and the average is worse. 4 clients × 10 local steps ×
# 30 rounds are 1,200 mini-batch steps; the centralised run gets as many:

# %%
# NBVAL_IGNORE_OUTPUT
order = np.argsort(ys, kind="stable")
iid = [(xs[i::4], ys[i::4]) for i in range(4)]
by_label = [(xs[order[k * len(ys) // 4:(k + 1) * len(ys) // 4]], ys[order[k * len(ys) // 4:(k + 1) * len(ys) // 4]])
            for k in range(4)]                                       # client k holds ~2.5 digit classes
x_te = x_test.astype(np.float64)
for name, clients in (("IID clients", iid), ("clients split by label", by_label)):
    fed = en.fedavg(params0, clients, rounds=30, local_steps=10, lr=0.5, batch=32, seed=0)
    acc = np.mean(en.mlp_forward(fed.params, x_te).argmax(1) == y_test)
    print(f"{name:<24}: 30 rounds × 10 local steps → test accuracy {acc:.1%}")
cent = en.sgd(params0, xs, ys, steps=1200, lr=0.5, batch=32, seed=0)     # as many gradient steps as the clients took
print(f"{'centralised SGD':<24}: 1,200 steps → {np.mean(en.mlp_forward(cent.params, x_te).argmax(1) == y_test):.1%}")

# %% [markdown]
# ## 9 · On a GPU
#
# `et.scale_up` puts everything together on CUDA: MNIST on the GPU once, a small fast CNN in
# channels-last layout (pixels stored with their channels side by side, the layout tensor cores
# prefer), bf16 autocast, `torch.compile`, a large batch with a one-cycle learning-rate schedule
# (the rate ramps up, then anneals down within one run), and reports the wall time to 99 % test accuracy. Without a GPU it says so and does nothing.

# %%
# NBVAL_IGNORE_OUTPUT
fast = et.scale_up(device=device)

# %% [markdown]
# ## Summary
#
# * **Measure first**: parameters and bytes for storage, FLOPs for arithmetic (2 per multiply-add;
#   a convolution's FLOPs grow with its output size), latency at the batch size you will serve, the
#   profiler for where the time goes. Energy = power × time, with the power an assumption unless
#   measured.
# * **Pruning** removed 90 % of the MLP's weights at no accuracy cost after retraining here; but
#   unstructured zeros do not speed up dense kernels — structured pruning (fewer neurons) does.
# * **Quantization**: 8-bit weights cost nothing measurable here and cut the size almost 4×; at 2
#   bits per-channel scales keep much more than one scale per tensor, and quantization-aware training
#   recovers the rest; PyTorch's dynamic int8 is slower at batch 1 and faster at batch 256 only on
#   some CPUs (your timings above).
# * **Distillation** helps when labels are scarce (the teacher's soft answers are extra data); T²
#   keeps the soft term's gradient independent of the temperature.
# * **bf16** keeps float32's range (no loss scaling) and is fast only where the hardware multiplies
#   bf16 natively; **fp16** needs loss scaling; `torch.compile` pays only after its first call, and
#   not for every model.
# * **Data parallel** = same step as one process on the global batch, if the gradients are
#   *averaged* and every worker gets a *different* shard; the ring all-reduce keeps each worker's
#   traffic below 2× the gradient size whatever P. Federated averaging trades communication for drift.
#
# **Exercises** (`exercises/10_efficiency.ipynb`): a conv layer's FLOPs and parameters, global
# magnitude pruning, per-channel affine quantization, the distillation loss and its gradient, ring
# all-reduce, and a data-parallel step equal to single-process training — then concept questions.

# %%
# NBVAL_IGNORE_OUTPUT
print(f"lesson ran in {time.perf_counter() - lesson_start:.0f} s")
