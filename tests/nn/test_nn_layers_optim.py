"""Layers (parameters, initialisation, modes), optimisers and the learning-rate schedule."""

import math

import numpy as np
import pytest

from scratchdet import nn
from scratchdet.errors import DataFormatError, InvalidArgumentError


def test_conv2d_layer_contract_shapes_and_grads(rng):
    conv = nn.Conv2d(in_channels=3, out_channels=16, kernel_size=3, stride=1, padding=1, rng=rng)
    x = rng.standard_normal((2, 3, 10, 12)).astype(np.float32)
    y = conv.forward(x)
    assert y.shape == (2, 16, 10, 12) and y.dtype == np.float32
    dx = conv.backward(np.ones_like(y))
    assert dx.shape == x.shape
    assert conv.grads["weight"].shape == (16, 3, 3, 3) and conv.grads["bias"].shape == (16,)
    assert set(conv.params) == set(conv.grads)


def test_he_and_xavier_initialisation_scales():
    he = nn.Conv2d(64, 64, 3, rng=0).params["weight"]
    assert he.std() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.03)
    xavier = nn.Linear(300, 200, rng=0, init="xavier").params["weight"]
    limit = math.sqrt(6 / 500)
    assert np.abs(xavier).max() <= limit and xavier.std() == pytest.approx(limit / math.sqrt(3), rel=0.03)
    with pytest.raises(InvalidArgumentError, match="init"):
        nn.Linear(2, 2, rng=0, init="zeros")


def test_same_seed_same_initial_weights():
    a, b, c = nn.Conv2d(3, 8, 3, rng=5), nn.Conv2d(3, 8, 3, rng=5), nn.Conv2d(3, 8, 3, rng=6)
    np.testing.assert_array_equal(a.params["weight"], b.params["weight"])
    assert not np.array_equal(a.params["weight"], c.params["weight"])


def test_layers_reject_global_random_state():
    with pytest.raises(InvalidArgumentError, match="rng"):
        nn.Linear(2, 2, rng=None)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: nn.Conv2d(1, 2, (2, 3), rng=0), "square"),
        (lambda: nn.Conv2d(1, 2, 0, rng=0), "kernel_size"),
        (lambda: nn.Conv2d(1, 2, 2.5, rng=0), "kernel_size"),
        (lambda: nn.Conv2d(0, 2, 3, rng=0), "in_channels"),
        (lambda: nn.Conv2d(1, 0, 3, rng=0), "out_channels"),
        (lambda: nn.Conv2d(1, 2, 3, stride=0, rng=0), "stride"),
        (lambda: nn.Conv2d(1, 2, 3, padding=-1, rng=0), "padding"),
        (lambda: nn.Linear(0, 2, rng=0), "in_features"),
        (lambda: nn.Linear(2, 1.5, rng=0), "out_features"),
        (lambda: nn.MaxPool2d(0), "kernel_size"),
        (lambda: nn.MaxPool2d(2, stride=0), "stride"),
        (lambda: nn.RoIPool(2, 0.0), "spatial_scale"),
        (lambda: nn.Dropout("0.5"), "probability"),
        (lambda: nn.Linear(2, 2, rng=0, dtype=np.float16), "dtype"),
        (lambda: nn.Conv2d(1, 2, 3, rng=0, dtype=int), "dtype"),
    ],
    ids=[
        "conv-non-square-kernel", "conv-zero-kernel", "conv-fractional-kernel", "conv-zero-in-channels",
        "conv-zero-out-channels", "conv-zero-stride", "conv-negative-padding", "linear-zero-in-features",
        "linear-fractional-out-features", "pool-zero-kernel", "pool-zero-stride", "roipool-zero-scale",
        "dropout-text-probability", "linear-float16", "conv-integer-dtype",
    ],
)
def test_layers_reject_bad_sizes_naming_the_argument(make, match):
    with pytest.raises(InvalidArgumentError, match=match):
        make()


@pytest.mark.parametrize(
    "layer",
    [nn.Conv2d(1, 1, 1, rng=0), nn.Linear(1, 1, rng=0), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.RoIPool(2, 1.0), nn.Dropout(0.5)],
    ids=["conv", "linear", "relu", "maxpool", "flatten", "roipool", "dropout"],
)
def test_backward_before_forward_is_a_clear_error(layer):
    for input_grad in (True, False):
        with pytest.raises(InvalidArgumentError, match="backward called before forward"):
            layer.backward(np.ones((1, 1, 2, 2), np.float32), input_grad=input_grad)


class _CountingPool(nn.MaxPool2d):
    """A pooling layer that counts its backward calls."""

    calls = 0

    def backward(self, dy, input_grad=True):
        self.calls += 1
        return super().backward(dy, input_grad)


@pytest.mark.parametrize(
    "dtype, stride, padding",
    [(np.float32, 1, 1), (np.float32, 2, 1), (np.float64, 1, 0), (np.float32, 1, 0)],
    ids=["float32-tiled", "float32-stride2-im2col", "float64-im2col", "float32-unpadded"],
)
def test_backward_without_input_grad_fills_the_same_grads_and_skips_the_input(rng, dtype, stride, padding):
    def net():
        return nn.Sequential(
            _CountingPool(1),  # no parameters, before the first layer that has some: never called
            nn.Sequential(nn.Conv2d(3, 32, 3, stride=stride, padding=padding, rng=1, dtype=dtype), nn.ReLU()),
            nn.Flatten(), nn.Dropout(0.3, rng=2), nn.Linear(32 * (1 + (9 + 2 * padding - 3) // stride) ** 2, 4, rng=3, dtype=dtype),
        )

    x = rng.standard_normal((3, 3, 9, 9)).astype(dtype)
    full, params_only = net(), net()
    dy = rng.standard_normal((3, 4)).astype(dtype)
    full.forward(x)
    params_only.forward(x)
    assert full.backward(dy).shape == x.shape and full[0].calls == 1
    assert params_only.backward(dy, input_grad=False) is None and params_only[0].calls == 0
    for (name, a, key), (_, b, _) in zip(full.named_parameters(), params_only.named_parameters()):
        np.testing.assert_array_equal(a.grads[key], b.grads[key], err_msg=name)
    # the first convolution asked alone, through the functional API
    conv = params_only[1][0]
    dx, dw, db = nn.functional.conv2d_backward(
        np.ones_like(conv.forward(x)), x, conv.params["weight"], stride, padding, input_grad=False
    )
    assert dx is None and dw.shape == conv.params["weight"].shape and db.shape == (32,)


def test_backward_without_input_grad_in_a_net_without_parameters_does_nothing(rng):
    net = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2))
    y = net.forward(rng.standard_normal((1, 1, 4, 4)))
    assert net.backward(np.ones_like(y), input_grad=False) is None
    assert nn.Linear(2, 3, rng=0).has_params() and not net.has_params()


def test_empty_batch_runs_forward_and_backward_through_every_layer():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2, 3, rng=0))
    y = net.forward(np.zeros((0, 1, 4, 4), np.float32))
    assert y.shape == (0, 3)
    assert net.backward(np.zeros_like(y)).shape == (0, 1, 4, 4)
    assert not net[0].grads["weight"].any() and net[4].grads["bias"].shape == (3,)


def test_conv2d_accepts_a_square_kernel_pair():
    assert nn.Conv2d(1, 2, (3, 3), rng=0).params["weight"].shape == (2, 1, 3, 3)


def test_dropout_is_identity_in_eval_mode_and_drops_in_train_mode(rng):
    net = nn.Sequential(nn.Dropout(0.5, rng=1))
    x = rng.standard_normal((10, 10))
    assert np.any(net.forward(x) == 0)
    net.eval()
    assert net.forward(x) is x and net.backward(x) is x
    net.train()
    assert net[0].training


def test_sequential_names_parameters_by_position():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.ReLU(), nn.Linear(2, 2, rng=0))
    assert [name for name, _, _ in net.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert len(net) == 3 and isinstance(net[1], nn.ReLU)


def test_roipool_layer_returns_feature_gradient(rng):
    layer = nn.RoIPool(output_size=2, spatial_scale=0.5)
    features = rng.standard_normal((1, 3, 6, 6))
    out = layer(features, np.array([[0, 0, 0, 11, 11]], dtype=np.float64))
    assert out.shape == (1, 3, 2, 2)
    assert layer.backward(np.ones_like(out)).shape == features.shape


def test_layer_to_cpu_keeps_numpy_arrays():
    net = nn.Sequential(nn.Linear(2, 3, rng=0)).to("cpu")
    assert isinstance(net[0].params["weight"], np.ndarray) and net.device == "cpu"
    with pytest.raises(InvalidArgumentError, match="device"):
        net.to("tpu")


def _one_param_model(value):
    layer = nn.Linear(1, 1, rng=0, dtype=np.float64)
    layer.params = {"p": np.array(value, dtype=np.float64)}
    layer.grads = {"p": np.zeros_like(layer.params["p"])}
    return layer


def test_sgd_momentum_and_weight_decay_by_hand():
    model = _one_param_model([1.0])
    opt = nn.SGD(model, lr=0.1, momentum=0.9, weight_decay=0.5)
    model.grads["p"][:] = 2.0
    opt.step()  # g = 2 + 0.5 * 1 = 2.5; v = 2.5; p = 1 - 0.25
    assert model.params["p"][0] == pytest.approx(0.75)
    opt.step()  # g = 2 + 0.375 = 2.375; v = 0.9 * 2.5 + 2.375 = 4.625; p = 0.75 - 0.4625
    assert model.params["p"][0] == pytest.approx(0.2875)


def test_adam_first_step_moves_each_parameter_by_lr():
    """After one step the bias-corrected ratio m / sqrt(v) is sign(g): every parameter moves by lr."""
    model = _one_param_model([1.0, -2.0, 3.0])
    opt = nn.Adam(model, lr=0.01)
    model.grads["p"][:] = [5.0, -0.001, 100.0]
    opt.step()
    np.testing.assert_allclose(model.params["p"], [0.99, -1.99, 2.99], atol=1e-6)


def test_optimiser_matches_live_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng()
    start, grads = rng.standard_normal(5), rng.standard_normal((4, 5))
    for ours_cls, torch_cls, kwargs, torch_kwargs in [
        (nn.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.8, weight_decay=0.1), dict(lr=0.05, momentum=0.8, weight_decay=0.1)),
        (nn.Adam, torch.optim.Adam, dict(lr=0.02, beta1=0.8, beta2=0.99, weight_decay=0.1), dict(lr=0.02, betas=(0.8, 0.99), weight_decay=0.1)),
    ]:
        model = _one_param_model(start.copy())
        opt = ours_cls(model, **kwargs)
        p = torch.nn.Parameter(torch.tensor(start))
        topt = torch_cls([p], **torch_kwargs)
        for g in grads:
            model.grads["p"][:] = g
            opt.step()
            p.grad = torch.tensor(g)
            topt.step()
        np.testing.assert_allclose(model.params["p"], p.detach().numpy(), rtol=1e-12, err_msg=ours_cls.__name__)


def test_optimiser_state_dict_resumes_exactly():
    model_a, model_b = _one_param_model([1.0, 2.0]), _one_param_model([1.0, 2.0])
    opt_a, opt_b = nn.Adam(model_a, lr=0.1), nn.Adam(model_b, lr=0.1)
    for g in ([1.0, -1.0], [0.5, 0.5]):
        model_a.grads["p"][:] = g
        opt_a.step()
        model_b.grads["p"][:] = g
        opt_b.step()
    resumed_model = _one_param_model(model_a.params["p"].copy())
    resumed = nn.Adam(resumed_model, lr=0.1)
    resumed.load_state_dict(opt_a.state_dict())
    model_b.grads["p"][:] = resumed_model.grads["p"][:] = [0.3, -2.0]
    opt_b.step()
    resumed.step()
    np.testing.assert_array_equal(resumed_model.params["p"], model_b.params["p"])


def test_step_lr_schedule_divides_every_step_size_epochs():
    opt = nn.SGD(_one_param_model([0.0]), lr=1.0)
    schedule = nn.StepLR(opt, step_size=2, gamma=0.1)
    lrs = [schedule.step() for _ in range(5)]
    np.testing.assert_allclose(lrs, [1.0, 0.1, 0.1, 0.01, 0.01])
    assert opt.lr == pytest.approx(0.01)


def _trained_state(opt_cls):
    model = _one_param_model([1.0, 2.0])
    opt = opt_cls(model, lr=0.1)
    model.grads["p"][:] = 1.0
    opt.step()
    return opt.state_dict()


@pytest.mark.parametrize(
    "saved_by, opt_cls, change, match",
    [
        (nn.SGD, nn.Adam, lambda s: s, r"holds \['velocity'\], Adam needs \['m', 'v'\]"),
        (nn.Adam, nn.SGD, lambda s: s, r"holds \['m', 'v'\], SGD needs \['velocity'\]"),
        (nn.Adam, nn.Adam, lambda s: s.pop("p/v"), r"holds \['m'\]"),
        (nn.Adam, nn.Adam, lambda s: s.update({"p/m": [0.0, 0.0]}), "p/m has shape list"),
        (nn.Adam, nn.Adam, lambda s: s.update({"q/m": np.zeros(2)}), "does not have"),
        (nn.Adam, nn.Adam, lambda s: s.update({"step": "x"}), "must be numbers"),
    ],
    ids=["sgd-state-into-adam", "adam-state-into-sgd", "missing-moment", "list-not-array", "unknown-parameter", "bad-step"],
)
def test_optimiser_load_state_dict_rejects_state_it_cannot_resume_from(saved_by, opt_cls, change, match):
    state = _trained_state(saved_by)
    change(state)
    opt = opt_cls(_one_param_model([1.0, 2.0]), lr=0.1)
    with pytest.raises(DataFormatError, match=match):
        opt.load_state_dict(state)


@pytest.mark.parametrize(
    "kwargs",
    [dict(lr=0.0), dict(lr=0.1, momentum=1.0), dict(lr=0.1, weight_decay=-1.0), dict(lr="0.1"),
     dict(lr=0.1, momentum="0.9"), dict(lr=float("inf"))],
    ids=["zero-lr", "momentum-one", "negative-decay", "text-lr", "text-momentum", "infinite-lr"],
)
def test_sgd_rejects_bad_settings(kwargs):
    with pytest.raises(InvalidArgumentError):
        nn.SGD(_one_param_model([0.0]), **kwargs)


@pytest.mark.parametrize(
    "kwargs", [dict(beta1="0.9"), dict(eps=0.0), dict(beta2=1.0)], ids=["text-beta1", "zero-eps", "beta2-one"]
)
def test_adam_rejects_bad_settings(kwargs):
    with pytest.raises(InvalidArgumentError):
        nn.Adam(_one_param_model([0.0]), **kwargs)


def test_step_lr_state_dict_resumes_the_schedule_exactly():
    uninterrupted = nn.StepLR(nn.SGD(_one_param_model([0.0]), lr=1.0), step_size=2, gamma=0.5)
    expected = [uninterrupted.step() for _ in range(5)]
    first = nn.StepLR(nn.SGD(_one_param_model([0.0]), lr=1.0), step_size=2, gamma=0.5)
    lrs = [first.step() for _ in range(3)]
    optimizer = nn.SGD(_one_param_model([0.0]), lr=1.0)
    optimizer.load_state_dict(first.optimizer.state_dict())
    resumed = nn.StepLR(optimizer, step_size=2, gamma=0.5)  # built after the optimiser's lr was restored
    resumed.load_state_dict(first.state_dict())
    assert lrs + [resumed.step() for _ in range(2)] == expected
    with pytest.raises(DataFormatError, match="epoch"):
        resumed.load_state_dict({"base_lr": np.array(1.0)})


@pytest.mark.parametrize("kwargs", [dict(step_size="a"), dict(step_size=0), dict(step_size=2, gamma="x")])
def test_step_lr_rejects_bad_settings(kwargs):
    with pytest.raises(InvalidArgumentError):
        nn.StepLR(nn.SGD(_one_param_model([0.0]), lr=0.1), **kwargs)


def test_optimiser_load_state_dict_copies_the_arrays_it_is_given():
    """Steps after a load must not write into the caller's checkpoint (it may be loaded again)."""
    model = _one_param_model([1.0, 2.0])
    opt = nn.SGD(model, lr=0.1, momentum=0.9)
    model.grads["p"][:] = [1.0, -1.0]
    opt.step()
    saved = opt.state_dict()
    before = {k: np.array(v, copy=True) for k, v in saved.items()}
    resumed_model = _one_param_model(model.params["p"].copy())
    resumed = nn.SGD(resumed_model, lr=0.1, momentum=0.9)
    resumed.load_state_dict(saved)
    resumed_model.grads["p"][:] = [0.5, 0.5]
    resumed.step()
    for k, v in before.items():
        np.testing.assert_array_equal(saved[k], v, err_msg=k)


def test_optimiser_load_state_dict_restores_the_learning_rate():
    """A checkpoint taken after the schedule lowered lr resumes at that lr, before any schedule step."""
    scheduled = nn.StepLR(nn.SGD(_one_param_model([0.0]), lr=1.0), step_size=1, gamma=0.5)
    scheduled.step()
    resumed = nn.SGD(_one_param_model([0.0]), lr=1.0)
    resumed.load_state_dict(scheduled.optimizer.state_dict())
    assert resumed.lr == 0.5


def test_adam_weight_decay_adds_to_the_gradient_by_hand():
    """g = grad + weight_decay * param (L2, as PyTorch's Adam): with a zero gradient the decay alone moves each
    parameter by lr on the first step, towards zero."""
    model = _one_param_model([1.0, -2.0])
    opt = nn.Adam(model, lr=0.01, weight_decay=0.5)
    opt.step()
    np.testing.assert_allclose(model.params["p"], [0.99, -1.99], atol=1e-6)


def test_step_lr_state_saved_before_the_first_step_loads():
    """Epoch 0 (a checkpoint written before training) is a valid state; only a negative epoch is refused."""
    saved = nn.StepLR(nn.SGD(_one_param_model([0.0]), lr=1.0), step_size=1, gamma=0.5).state_dict()
    resumed = nn.StepLR(nn.SGD(_one_param_model([0.0]), lr=1.0), step_size=1, gamma=0.5)
    resumed.load_state_dict(saved)
    assert resumed.epoch == 0 and resumed.step() == 0.5
    with pytest.raises(DataFormatError, match="epoch >= 0"):
        resumed.load_state_dict({"epoch": np.array(-1), "base_lr": np.array(1.0)})
