"""BaS-Net model and loss: shapes, branch semantics, top-k pooling, the loss on hand-made numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from wtalcli.model.basnet import BaSNet, BaSOutput, count_train_flops
from wtalcli.model.losses import basnet_loss, basnet_targets, bce_on_probabilities

D, C, H, A = 16, 3, 32, 8


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy machine the OpenMP threads'
    spin-waiting makes these tests several times slower; restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(seed: int = 0, **kw) -> BaSNet:
    torch.manual_seed(seed)
    return BaSNet(D, C, hidden=H, attn_hidden=A, **kw).eval()


def test_output_shapes_and_ranges():
    model = _model()
    x = torch.randn(2, 32, D)
    out = model(x)
    assert out.w.shape == (2, 32)
    assert out.cas_base.shape == out.cas_supp.shape == (2, 32, C + 1)
    assert out.p_base.shape == out.p_supp.shape == (2, C + 1)
    assert out.h_base.shape == out.h_supp.shape == (2, 32, H)
    assert out.h is out.h_base
    assert bool(((out.w > 0) & (out.w < 1)).all())
    assert torch.allclose(out.p_base.sum(1), torch.ones(2)) and torch.allclose(
        out.p_supp.sum(1), torch.ones(2)
    )
    assert out.p_base.dtype == torch.float32
    with pytest.raises(ValueError):
        model(torch.randn(2, 32, D + 1))


def test_layer_shapes_follow_the_official_layout():
    m = BaSNet(2048, 20)
    assert m.filter_1.weight.shape == (512, 2048, 1) and m.filter_2.weight.shape == (1, 512, 1)
    assert m.cas_1.weight.shape == (2048, 2048, 3) and m.cas_2.weight.shape == (2048, 2048, 3)
    assert m.classifier.weight.shape == (21, 2048, 1) and m.classifier.bias is None
    assert m.dropout.p == 0.7


def test_suppression_branch_is_the_shared_cas_module_on_filtered_features():
    model = _model(1)
    x = torch.randn(3, 20, D)
    with torch.no_grad():
        out = model(x)
        again = model(x * out.w[..., None])  # feed w*X through the *base* branch
    torch.testing.assert_close(again.cas_base, out.cas_supp, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(again.h_base, out.h_supp, rtol=1e-5, atol=1e-6)


def test_videos_in_a_batch_do_not_interact():
    model = _model(2)
    x = torch.randn(4, 24, D)
    with torch.no_grad():
        whole = model(x)
        for i in range(4):
            one = model(x[i : i + 1])
            torch.testing.assert_close(one.cas_supp[0], whole.cas_supp[i], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(one.p_base[0], whole.p_base[i], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("t", "k"), [(750, 93), (32, 4), (20, 2), (5, 1), (1, 1)])
def test_topk_pooling_takes_the_mean_of_the_k_largest(t, k):
    model = _model(3)
    assert model.topk(t) == k
    x = torch.randn(2, t, D)
    with torch.no_grad():
        out = model(x)
    cas = out.cas_base.numpy()
    pooled = np.sort(cas, axis=1)[:, ::-1][:, :k].mean(axis=1)
    expected = np.exp(pooled) / np.exp(pooled).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out.p_base.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_dropout_acts_in_training_mode_only():
    model = _model(4, dropout=0.7)
    x = torch.randn(2, 16, D)
    with torch.no_grad():
        a, b = model(x), model(x)
        assert torch.equal(a.cas_base, b.cas_base)
        model.train()
        c = model(x)
    assert not torch.equal(a.cas_base, c.cas_base)
    assert torch.equal(a.h_base, c.h_base)  # h is taken before dropout


def test_bf16_autocast_keeps_pooling_and_probabilities_in_float32():
    model = _model(5)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 16, D))
    assert out.cas_base.dtype == torch.bfloat16
    assert out.p_base.dtype == out.p_supp.dtype == torch.float32


def test_flop_count_matches_torch_flop_counter():
    model = BaSNet(D, C, hidden=H, attn_hidden=A, dropout=0.0)
    x = torch.randn(2, 24, D)
    with FlopCounterMode(display=False) as fc:
        out = model(x)
        (out.p_base.sum() + out.p_supp.sum() + out.w.sum()).backward()
    assert count_train_flops(2, 24, D, C, H, A)["total"] == fc.get_total_flops()


def _out(p_base, p_supp, w) -> BaSOutput:
    p_base, p_supp, w = (torch.tensor(v, dtype=torch.float32) for v in (p_base, p_supp, w))
    empty = torch.zeros(0)
    return BaSOutput(w, empty, empty, p_base, p_supp, empty, empty)


def _bce(ps, ts):  # mean binary cross-entropy, written out element by element
    terms = [
        -(t * math.log(p) + (1 - t) * math.log(1 - p))
        for prow, trow in zip(ps, ts, strict=True)
        for p, t in zip(prow, trow, strict=True)
    ]
    return sum(terms) / len(terms)


def test_loss_on_a_hand_computed_example():
    y = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    p_base = [[0.5, 0.2, 0.3], [0.3, 0.3, 0.4]]
    p_supp = [[0.7, 0.1, 0.2], [0.4, 0.5, 0.1]]
    w = [[0.5, 0.25, 0.25], [1.0, 0.0, 0.5]]
    # targets: base [y;1]/(|y|+1), suppression [y;0]/|y|
    t_base = [[0.5, 0.0, 0.5], [1 / 3, 1 / 3, 1 / 3]]
    t_supp = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]
    total, terms = basnet_loss(_out(p_base, p_supp, w), y, attn_l1=1e-4)
    base, supp, norm = _bce(p_base, t_base), _bce(p_supp, t_supp), (1.0 + 1.5) / 2
    assert terms["base"].item() == pytest.approx(base, rel=1e-6)
    assert terms["supp"].item() == pytest.approx(supp, rel=1e-6)
    assert terms["norm"].item() == pytest.approx(norm, rel=1e-6)
    assert total.item() == pytest.approx(base + supp + 1e-4 * norm, rel=1e-6)
    # the official code's criterion (nn.BCELoss, mean over batch x (C+1)) gives the same numbers
    official = torch.nn.BCELoss()
    tb, ts = basnet_targets(y)
    assert terms["base"].item() == pytest.approx(official(torch.tensor(p_base), tb).item(), rel=1e-6)
    assert terms["supp"].item() == pytest.approx(official(torch.tensor(p_supp), ts).item(), rel=1e-6)


def test_uniform_scores_cost_log2_whatever_the_targets():
    y = torch.tensor([[0.0, 1.0, 1.0]])
    p = [[0.5, 0.5, 0.5, 0.5]]
    _, terms = basnet_loss(_out(p, p, [[0.0, 0.0]]), y)
    assert terms["base"].item() == pytest.approx(math.log(2), rel=1e-6)
    assert terms["supp"].item() == pytest.approx(math.log(2), rel=1e-6)
    assert terms["norm"].item() == 0.0


def test_loss_edge_cases_stay_finite_like_bceloss():
    # a probability of exactly 0 against a positive target: the log is clamped at -100 (nn.BCELoss)
    p, t = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    assert bce_on_probabilities(p, t).item() == pytest.approx(100.0)
    assert bce_on_probabilities(p, t).item() == pytest.approx(torch.nn.BCELoss()(p, t).item())
    # a video without action labels: the suppression target is all zeros instead of NaN
    _, t_supp = basnet_targets(torch.zeros(1, 2))
    assert torch.equal(t_supp, torch.zeros(1, 3))


def test_loss_backpropagates_into_every_parameter():
    model = _model(6).train()
    out = model(torch.randn(2, 16, D))
    total, _ = basnet_loss(out, torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]))
    total.backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters())


def test_loss_rejects_labels_of_the_wrong_width():
    with pytest.raises(ValueError):
        basnet_loss(_out([[0.5, 0.5]], [[0.5, 0.5]], [[0.1]]), torch.ones(1, 2))
