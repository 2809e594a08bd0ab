"""Chapter 05's graded exercises (dlcourse/cnn/checks.py): the exercise forms equal PyTorch, and the
checks' diagnoses that are not mistake-table rows (tests/test_course.py proves every row)."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from checktools import solution
from dlcourse.cnn import checks
from dlcourse.cnn import numpy_impl as ref
from dlcourse.cnn.checks import check as ch05

STEM = "05_cnn"


def _t(a, grad=False):
    return torch.from_numpy(np.array(a, dtype=np.float64)).requires_grad_(grad)


# --------------------------------------------------------------------------- the exercise forms equal PyTorch

def _conv_configs(count, seed):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        c_in, c_out = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        k_h, k_w = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        stride, padding = int(rng.integers(1, 4)), int(rng.integers(0, 3))
        h_img = int(rng.integers(k_h, 9)) + 1
        w_img = int(rng.integers(k_w, 9)) + 1
        x = rng.standard_normal((int(rng.integers(1, 4)), c_in, h_img, w_img))
        yield x, rng.standard_normal((c_out, c_in, k_h, k_w)), rng.standard_normal(c_out), stride, padding


@pytest.mark.parametrize("answer", ["reference", "solution"])
def test_conv2d_forms_equal_f_conv2d(answer):
    conv2d = ref.conv2d if answer == "reference" else solution(STEM, "conv2d")
    for x, w, b, stride, padding in _conv_configs(60, seed=1):
        expected = F.conv2d(_t(x), _t(w), _t(b), stride=stride, padding=padding).numpy()
        np.testing.assert_allclose(conv2d(x, w, b, stride, padding), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("answer", ["reference", "solution"])
def test_conv2d_backward_forms_equal_autograd(answer):
    backward = ref.conv2d_backward_from_x if answer == "reference" else solution(STEM, "conv2d_backward")
    rng = np.random.default_rng(2)
    for x, w, b, stride, padding in _conv_configs(60, seed=2):
        xt, wt, bt = _t(x, True), _t(w, True), _t(b, True)
        out = F.conv2d(xt, wt, bt, stride=stride, padding=padding)
        dout = rng.standard_normal(out.shape)
        out.backward(_t(dout))
        dx, dw, db = backward(dout, x, w, stride, padding)
        for ours, theirs in ((dx, xt.grad), (dw, wt.grad), (db, bt.grad)):
            np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("answer", ["reference", "solution"])
def test_maxpool2d_backward_forms_equal_autograd_with_ties(answer):
    backward = ref.maxpool2d_backward_from_x if answer == "reference" else solution(STEM, "maxpool2d_backward")
    rng = np.random.default_rng(3)
    for trial in range(60):
        kernel, stride = [(2, 2), (3, 2), (2, 1), (3, 3), (3, 1)][trial % 5]
        x = rng.integers(0, 3, (2, 2, int(rng.integers(kernel, 9)), int(rng.integers(kernel, 9)))).astype(float)
        xt = _t(x, True)
        out = F.max_pool2d(xt, kernel, stride)
        dout = rng.standard_normal(out.shape)
        out.backward(_t(dout))
        np.testing.assert_allclose(backward(dout, x, kernel, stride), xt.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_conv_output_size_equals_the_shape_pytorch_gives():
    size_of = solution(STEM, "conv_output_size")
    for size, kernel, stride, padding, dilation in checks.OUTPUT_SIZE_CASES[:-2]:
        out = F.conv2d(torch.zeros(1, 1, size, 1), torch.zeros(1, 1, kernel, 1), stride=(stride, 1),
                       padding=(padding, 0), dilation=(dilation, 1))
        assert ref.conv_output_size(size, kernel, stride, padding, dilation) == out.shape[2]
        assert size_of(size, kernel, stride, padding, dilation) == out.shape[2]


def _measured_receptive_field(layers) -> int:
    """Pixels (along one axis) whose gradient reaches the centre unit of the last layer."""
    size = 1 + sum(d * (k - 1) * int(np.prod([s for _, s, _ in layers[:i]])) for i, (k, _, d) in enumerate(layers))
    x = torch.ones(1, 1, 1, 4 * size + 8, requires_grad=True)
    h = x
    for kernel, stride, dilation in layers:
        h = F.conv2d(h, torch.ones(1, 1, 1, kernel), stride=(1, stride), dilation=(1, dilation))
    h[0, 0, 0, h.shape[3] // 2].backward()
    reached = np.flatnonzero(x.grad[0, 0, 0].numpy())
    return int(reached[-1] - reached[0] + 1)


def test_receptive_field_forms_equal_the_gradient_measured_field():
    receptive_field = solution(STEM, "receptive_field")
    for layers in checks.RF_CASES:
        measured = _measured_receptive_field(layers)
        assert ref.receptive_field_size(layers) == measured
        assert receptive_field(layers) == measured
    assert ref.receptive_field_size([]) == 1


def test_train_digits_cnn_reference_reaches_97_percent():
    d = checks.digits_data()
    model = ref.train_digits_cnn_on(d.x_train, d.y_train, d.x_val, d.y_val, seed=0)
    with torch.no_grad():
        logits = model(torch.as_tensor(d.x_test).reshape(-1, 1, 8, 8))
    assert not model.training
    assert (logits.argmax(dim=1).numpy() == d.y_test).mean() >= checks.TARGET_ACCURACY


# --------------------------------------------------------------------------- diagnoses that are not table rows

def _conv2d_loop_over_positions(x, w, b, stride=1, padding=0):
    """Vectorised over images and channels, a loop over output positions only: fast enough, not vectorised."""
    x_pad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    k_h, k_w = w.shape[2:]
    h_out = (x_pad.shape[2] - k_h) // stride + 1
    w_out = (x_pad.shape[3] - k_w) // stride + 1
    out = np.empty((x.shape[0], w.shape[0], h_out, w_out))
    for p in range(h_out):
        for q in range(w_out):
            window = x_pad[:, :, p * stride:p * stride + k_h, q * stride:q * stride + k_w]
            out[:, :, p, q] = np.tensordot(window, w, axes=([1, 2, 3], [1, 2, 3]))
    return out + b[:, None, None]


def _conv2d_plain_einsum(x, w, b, stride=1, padding=0):
    x_pad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = np.lib.stride_tricks.sliding_window_view(x_pad, w.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("nchwij,ocij->nohw", windows, w) + b[:, None, None]   # no optimize=True: slower, still fine


def _conv2d_tensordot_pads_every_axis(x, w, b, stride=1, padding=0):
    x_pad = np.pad(x, padding)
    windows = np.lib.stride_tricks.sliding_window_view(x_pad, w.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
    return np.tensordot(windows, w, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2) + b[:, None, None]


def test_conv2d_time_limit_accepts_vectorised_answers_and_names_padding_errors():
    result = ch05.run("conv2d", _conv2d_plain_einsum)
    assert result.passed, result.message
    result = ch05.run("conv2d", _conv2d_loop_over_positions)   # fast enough, but a loop over pixels
    assert result.mistake == "Python loops" and "output positions" in result.message
    result = ch05.run("conv2d", _conv2d_tensordot_pads_every_axis)   # raises another error than the row's einsum
    assert result.mistake == "every axis padded"
    assert "padding 1" in result.message


def test_conv2d_python_loops_message_says_what_was_measured(monkeypatch):
    result = ch05.run("conv2d", _review_conv2d_pixel_loops_vec_channels)   # caught by the line count
    assert result.mistake == "Python loops"
    assert result.message.startswith("conv2d loops over the output pixels in Python: vectorise")
    assert "found by counting, not timing" in result.message and "too slow" not in result.message
    monkeypatch.setattr(checks, "CONV_SECONDS", 1e-4)                      # caught by the clock
    result = ch05.run("conv2d", _conv2d_plain_einsum)
    assert result.mistake == "Python loops"
    assert result.message.startswith(checks.CONV_SLOW_MESSAGE + " (stopped after 0.0001 s")
    assert "loops over the output pixels" not in result.message


def _conv2d_backward_dx_zero(dout, x, w, stride=1, padding=0):
    dx, dw, db = solution(STEM, "conv2d_backward")(dout, x, w, stride, padding)
    return np.zeros_like(dx), dw, db


def test_conv2d_backward_names_the_wrong_gradient():
    result = ch05.run("conv2d_backward", _conv2d_backward_dx_zero)
    assert result.message.startswith("dw and db are right; dx (")
    assert "is wrong: max error" in result.message


def test_conv_output_size_refuses_floats_and_receptive_field_takes_lists():
    def float_size(size, kernel, stride=1, padding=0, dilation=1):
        return float(solution(STEM, "conv_output_size")(size, kernel, stride, padding, dilation))

    result = ch05.run("conv_output_size", float_size)
    assert result.mistake == "float instead of int" and "it returned 3.0" in result.message

    def from_lists(layers):
        return solution(STEM, "receptive_field")([list(layer) for layer in layers])

    assert ch05.run("receptive_field", from_lists).passed


def _tiny_loop(zero_grad: bool, clip: bool):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    for batch in torch.arange(64).split(8):
        if zero_grad:
            optimizer.zero_grad()
        F.cross_entropy(model(x[batch]), y[batch]).backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()


# (Without zero_grad but with clipping, the clipped old sum is small beside each new gradient: not
# recognised, and it also does little harm.)
@pytest.mark.parametrize("zero_grad, clip", [(True, False), (True, True), (False, False)])
def test_training_watch_sees_piled_up_gradients_but_not_clipping(zero_grad, clip):
    with checks._TrainingWatch() as watch:
        _tiny_loop(zero_grad, clip)
    assert watch.steps == 8 and watch.compared == 7
    assert watch.zero_grad_forgotten is (not zero_grad)
    assert watch.grad_forwards == 8 and len(watch.rows) == 64
    assert watch._handles == []


def _train_with_dropout_left_in_train_mode(x_train, y_train, x_val, y_val, seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Dropout(0.5), nn.Linear(256, 10))
    x = torch.as_tensor(np.concatenate([x_train, x_val])).reshape(-1, 1, 8, 8)   # train + val: allowed
    y = torch.as_tensor(np.concatenate([y_train, y_val]))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(12):
        for batch in torch.randperm(len(x)).split(32):
            optimizer.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model                     # still in train mode: the check puts it in eval mode


def _returns_model_and_loss(x_train, y_train, x_val, y_val, seed):
    return checks.cnn_never_trained(x_train, y_train, x_val, y_val, seed), 0.0


def _dense_layer_does_not_fit(x_train, y_train, x_val, y_val, seed):
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(64, 10))   # 4 * 6 * 6 = 144 inputs come


def test_train_digits_cnn_puts_the_model_in_eval_mode_and_explains_the_form_of_the_answer():
    result = ch05.run("train_digits_cnn", _train_with_dropout_left_in_train_mode)
    assert result.passed, result.message
    assert "(the check put the model in eval mode)" in result.message
    assert ch05.run("train_digits_cnn", _returns_model_and_loss).message.startswith(
        "train_digits_cnn returned a tuple of 2")
    result = ch05.run("train_digits_cnn", _dense_layer_does_not_fit)
    assert "mat1 and mat2" in result.message and "must take images (N, 1, 8, 8)" in result.message


def test_train_digits_cnn_time_limit(monkeypatch):
    monkeypatch.setattr(checks, "TRAIN_SECONDS", 0.05)
    result = ch05.run("train_digits_cnn", solution(STEM, "train_digits_cnn"))
    assert not result.passed and result.message.startswith("training took more than 0.05 s on the CPU")


# --------------------------------------------------------------------------- learner review (regressions)

def _review_pad(x, p):
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))


def _review_convb_square_output(dout, x, w, stride=1, padding=0):   # reviewer's m3b.py, verbatim
    N, C, H, W = x.shape; O, _, kH, kW = w.shape
    Ho = dout.shape[2]; Wo = Ho            # BUG: assumes square output
    s = stride
    xp = _review_pad(x, padding); dxp = np.zeros_like(xp); dw = np.zeros_like(w)
    for i in range(kH):
        for j in range(kW):
            sl = (slice(None), slice(None), slice(i, i + s * (Ho - 1) + 1, s), slice(j, j + s * (Wo - 1) + 1, s))
            dw[:, :, i, j] = np.einsum('nopq,ncpq->oc', dout, xp[sl])
            dxp[sl] += np.einsum('nopq,oc->ncpq', dout, w[:, :, i, j])
    return dxp[:, :, padding:padding + H, padding:padding + W], dw, dout.sum(axis=(0, 2, 3))


def _review_convb_kh_for_both(dout, x, w, stride=1, padding=0):     # reviewer's m3b.py, verbatim
    N, C, H, W = x.shape; O, _, kH, kW = w.shape
    Ho, Wo = dout.shape[2:]
    s = stride
    xp = _review_pad(x, padding); dxp = np.zeros_like(xp); dw = np.zeros_like(w)
    for i in range(kH):
        for j in range(kH if kH <= kW else kW):
            sl = (slice(None), slice(None), slice(i, i + s * (Ho - 1) + 1, s), slice(j, j + s * (Wo - 1) + 1, s))
            dw[:, :, i, j] = np.einsum('nopq,ncpq->oc', dout, xp[sl])
            dxp[sl] += np.einsum('nopq,oc->ncpq', dout, w[:, :, i, j])
    return dxp[:, :, padding:padding + H, padding:padding + W], dw, dout.sum(axis=(0, 2, 3))


def _review_conv2d_h_out_for_both(x, w, b, stride=1, padding=0):   # reviewer's m3b.py, verbatim
    xp = _review_pad(x, padding); kH, kW = w.shape[2:]
    win = np.lib.stride_tricks.sliding_window_view(xp, (kH, kW), axis=(2, 3))[:, :, ::stride, ::stride]
    Ho = win.shape[2]; win = win[:, :, :, :Ho]
    return np.einsum('ncpqij,ocij->nopq', win, w) + b[:, None, None]


def test_review_square_output_assumptions_fail_early():
    for fn in (_review_convb_square_output, _review_convb_kh_for_both):
        result = ch05.run("conv2d_backward", fn)
        assert not result.passed, result.message
    result = ch05.run("conv2d_backward", _review_convb_square_output)
    assert "convb_case(2)" in str(result)   # the early non-square case, not the last
    result = ch05.run("conv2d", _review_conv2d_h_out_for_both)
    assert not result.passed and "conv2d_case(2)" in str(result)


# the reviewer's m6.py training loop with its modes, verbatim (F, nn and torch are imported above)

def make(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1,32,3,padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(32,64,3,padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(64*4,10))
def trainer(mode):
    def train_digits_cnn(x_train, y_train, x_val, y_val, seed):
        model = make(seed)
        if mode=='mlp':
            torch.manual_seed(seed)
            model = nn.Sequential(nn.Flatten(), nn.Linear(64,256), nn.ReLU(), nn.Linear(256,10))
        X = torch.as_tensor(x_train, dtype=torch.float32)
        X = X.reshape(-1,1,8,8) if mode!='chlast' else X.reshape(-1,8,8,1).permute(0,3,2,1)  # transposed images
        if mode=='noreshape': X = torch.as_tensor(x_train, dtype=torch.float32)
        Y = torch.as_tensor(y_train)
        if mode=='float labels': Y = Y.float()
        opt = torch.optim.Adam(model.parameters(), lr=3e-3 if mode!='sgd lr' else 1e-4) if mode!='sgd lr' else torch.optim.SGD(model.parameters(), lr=1e-3)
        epochs = 1 if mode=='1 epoch' else 15
        for ep in range(epochs):
            for idx in torch.randperm(len(X)).split(32):
                if mode!='no zero_grad': opt.zero_grad()
                out = model(X[idx])
                if mode=='softmax': out = F.softmax(out, dim=1)
                if mode=='log_softmax+nll': loss = F.nll_loss(F.log_softmax(out,1), Y[idx])
                elif mode=='float labels': loss = F.mse_loss(out, F.one_hot(Y[idx].long(),10).float())
                else: loss = F.cross_entropy(out, Y[idx])
                if mode=='step before backward': opt.step(); loss.backward()
                else: loss.backward(); opt.step()
        if mode=='return softmax model': return nn.Sequential(model, nn.Softmax(dim=1))
        return model
    return train_digits_cnn


def test_review_an_mlp_is_not_a_cnn():
    result = ch05.run("train_digits_cnn", trainer("mlp"))
    assert result.mistake == "no convolution"
    assert result.message.startswith("the model has no convolution: the exercise asks for a CNN (nn.Conv2d layers)")


def test_review_a_softmax_model_fails_even_above_97_percent():
    result = ch05.run("train_digits_cnn", trainer("return softmax model"))
    assert result.mistake == "softmax before CrossEntropyLoss"
    assert "test accuracy 9" in result.message          # it reached ~99 %: still the mistake


def test_review_softmax_in_the_training_loop_fails_even_above_97_percent():
    original = F.cross_entropy, F.mse_loss
    result = ch05.run("train_digits_cnn", trainer("softmax"))          # the returned model gives logits
    assert result.mistake == "softmax in the training loop", result.message
    assert result.message.startswith("the training loop hands probabilities")
    assert "cross-entropy takes logits" in result.message and "cross-entropy calls got probabilities" in result.message
    assert (F.cross_entropy, F.mse_loss) == original                    # the spies are gone after the check


def _softmax_into_cross_entropy_loss_module(x_train, y_train, x_val, y_val, seed):
    torch.manual_seed(seed)
    model = make(seed)
    x, y = torch.as_tensor(x_train).reshape(-1, 1, 8, 8), torch.as_tensor(y_train)
    opt, loss_fn = torch.optim.Adam(model.parameters(), lr=3e-3), nn.CrossEntropyLoss()
    for idx in torch.randperm(len(x)).split(32):
        loss = loss_fn(nn.Softmax(dim=1)(model(x[idx])), y[idx])
        opt.zero_grad(); loss.backward(); opt.step()
    return model


def test_softmax_into_the_loss_module_is_named_too_and_the_solution_is_not_blamed():
    result = ch05.run("train_digits_cnn", _softmax_into_cross_entropy_loss_module)
    assert result.mistake == "softmax in the training loop", result.message
    result = ch05.run("train_digits_cnn", trainer("log_softmax+nll"))   # log-softmax + NLL is cross-entropy: fine
    assert result.passed, result.message


def test_review_mse_on_one_hot_is_a_note_above_97_percent_and_the_mistake_below():
    result = ch05.run("train_digits_cnn", trainer("float labels"))     # m6's 'float labels' is MSE on one-hot
    assert result.passed, result.message                               # the exercise does not prescribe the loss
    assert "note: you trained with a squared error" in result.message
    result = ch05.run("train_digits_cnn", checks.cnn_mse_on_one_hot)   # same loss, too little training
    assert result.mistake == "MSE on one-hot labels" and "squared-error losses" in result.message


def _review_conv2d_taploop(x, w, b, stride=1, padding=0):        # reviewer's m2.py alt_taploop, verbatim
    N, C, H, W = x.shape; O, _, kH, kW = w.shape
    xp = _review_pad(x, padding); Ho = (H + 2 * padding - kH) // stride + 1; Wo = (W + 2 * padding - kW) // stride + 1
    out = np.zeros((N, O, Ho, Wo), dtype=np.result_type(x, w))
    for i in range(kH):
        for j in range(kW):
            out += np.einsum('ncpq,oc->nopq', xp[:, :, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride], w[:, :, i, j])
    return out + b[:, None, None]


def _review_conv2d_pixel_loops_vec_channels(x, w, b, stride=1, padding=0):   # reviewer's m2.py, verbatim
    N, C, H, W = x.shape; O, _, kH, kW = w.shape
    xp = _review_pad(x, padding); Ho = (H + 2 * padding - kH) // stride + 1; Wo = (W + 2 * padding - kW) // stride + 1
    out = np.zeros((N, O, Ho, Wo))
    for p in range(Ho):
        for q in range(Wo):
            out[:, :, p, q] = np.einsum('ncij,ocij->no', xp[:, :, p * stride:p * stride + kH, q * stride:q * stride + kW], w) + b
    return out


def test_review_conv2d_loop_over_pixels_fails_and_loop_over_taps_passes():
    result = ch05.run("conv2d", _review_conv2d_pixel_loops_vec_channels)
    assert result.mistake == "Python loops" and "1,024 output positions" in result.message
    result = ch05.run("conv2d", _review_conv2d_taploop)
    assert result.passed, result.message
    assert "vectorised" not in result.message


def test_review_right_values_as_floats_get_the_same_int_message_everywhere():
    def conv_output_size(size, kernel, stride=1, padding=0, dilation=1):   # reviewer's m1.py 'ALT np.floor float'
        return np.floor((size + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1

    def receptive_field(layers):                                          # reviewer's m5.py 'float jump'
        r = 1.0; j = 1.0
        for k, s, d in layers: r += d * (k - 1) * j; j *= s
        return r

    results = [ch05.run("conv_output_size", conv_output_size), ch05.run("receptive_field", receptive_field)]
    for result in results:
        assert result.mistake == "float instead of int", result.message
        assert result.message.startswith(checks.INT_MESSAGE) and "return an int (e.g. int(...) or //)" in result.message

    def true_division(size, kernel, stride=1, padding=0, dilation=1):      # reviewer's m1.py 'M true division'
        return (size + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1

    assert ch05.run("conv_output_size", true_division).mistake == "true division"


def test_review_step_before_backward_and_transposed_training_images_are_named():
    result = ch05.run("train_digits_cnn", trainer("step before backward"))
    assert result.mistake == "step before backward", result.message
    assert "optimizer.step() ran while .grad was None" in result.message
    result = ch05.run("train_digits_cnn", trainer("chlast"))
    assert result.mistake == "test images arranged differently", result.message
    assert result.message.startswith("the test images go through a different reshape/permutation than the "
                                     "training images")


def _review_conv2d_stride_window(x, w, b, stride=1, padding=0):   # reviewer's m2.py m_stride_window, verbatim
    # stride in window shape confusion: step positions by stride then starting at stride-1
    win = np.lib.stride_tricks.sliding_window_view(_review_pad(x, padding), w.shape[2:], axis=(2, 3))[:, :, stride - 1::stride, stride - 1::stride]
    return np.einsum('ncpqij,ocij->nopq', win, w) + b[:, None, None]


def test_review_windows_offset_by_the_stride_are_not_blamed_on_padding():
    result = ch05.run("conv2d", _review_conv2d_stride_window)
    assert result.mistake == "windows offset by the stride", result.message


def _review_pool_tap_assign(dout, x, kernel_size=2, stride=2):   # reviewer's m4b.py, verbatim
    k, s = kernel_size, stride; N, C, H, W = x.shape; Ho, Wo = dout.shape[2:]
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s].reshape(N, C, Ho, Wo, k * k).argmax(-1)
    dx = np.zeros_like(x)
    for i in range(k):
        for j in range(k):
            dx[:, :, i:i + s * (Ho - 1) + 1:s, j:j + s * (Wo - 1) + 1:s] = np.where(win == i * k + j, dout, 0)
    return dx


def _review_convb_assign(dout, x, w, stride=1, padding=0):      # reviewer's m3.py generic(..., assign=True)
    N, C, H, W = x.shape; O, _, kH, kW = w.shape; Ho, Wo = dout.shape[2:]
    st = stride
    xp = _review_pad(x, padding); dxp = np.zeros_like(xp); dw = np.zeros_like(w)
    for i in range(kH):
        for j in range(kW):
            sl = (slice(None), slice(None), slice(i, i + st * (Ho - 1) + 1, st), slice(j, j + st * (Wo - 1) + 1, st))
            dw[:, :, i, j] = np.einsum('nopq,ncpq->oc', dout, xp[sl])
            dxp[sl] = np.einsum('nopq,oc->ncpq', dout, w[:, :, i, j])
    return dxp[:, :, padding:padding + H, padding:padding + W], dw, dout.sum(axis=(0, 2, 3))


def test_review_classics_are_named():
    assert ch05.run("maxpool2d_backward", _review_pool_tap_assign).mistake == "= on the tap's slice"
    assert ch05.run("conv2d_backward", _review_convb_assign).mistake == "dx assigned, not added"

    def conv_output_size(size, kernel, stride=1, padding=0, dilation=1):   # reviewer's m1.py 'M stride ignored'
        return (size + 2 * padding - dilation * (kernel - 1) - 1) + 1
    assert ch05.run("conv_output_size", conv_output_size).mistake == "stride ignored"

    def receptive_field(layers):                                          # reviewer's m5.py 'k not k-1'
        r, j = 1, 1
        for k, s, d in layers: r += d * k * j; j *= s
        return r
    assert ch05.run("receptive_field", receptive_field).mistake == "k added instead of k - 1"
    result = ch05.run("q_receptive_field", lambda: 10)
    assert result.mistake == "the lesson's stack" and not result.passed
