import math

import numpy as np
import pytest
import torch

from wtalcli.dcc.contrast import (
    ACT,
    BG,
    ProjectionHead,
    RegionBank,
    Regions,
    dcc_loss,
    pair_masks,
    region_features,
    region_matrix,
)
from wtalcli.dcc.schedule import beta_at


def regions_from(rows, feats):
    """rows: (video, cls, region, kind, valid)."""
    r = np.array(rows)
    return Regions(
        feat=torch.nn.functional.normalize(torch.tensor(feats, dtype=torch.float32), dim=-1),
        video=torch.tensor(r[:, 0]),
        cls=torch.tensor(r[:, 1]),
        region=torch.tensor(r[:, 2]),
        kind=torch.tensor(r[:, 3]),
        valid=torch.tensor(r[:, 4]).bool(),
    )


def test_region_matrix_equal_consecutive():
    rm = region_matrix(10, 5)
    assert rm.sum(0).tolist() == [2, 2, 2, 2, 2]
    assert rm.argmax(1).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_region_features_weighted_mean_and_skip():
    # one video, T=4, M=2, C=2 (+bg), labelled with class 1 only
    x = torch.tensor([[[1.0, 0], [0, 1], [1, 1], [3, 0]]])  # (1, 4, 2)
    pseudo = torch.tensor([[[0, 1, 0], [0, 0, 1], [0, 1, 0], [0, 1, 0]]])
    conf = torch.tensor([[[1, 0.5, 1], [1, 1, 1], [1, 1, 1], [1, 0.5, 1]]])
    labels = torch.tensor([[0, 1]])
    r = region_features(x, pseudo, conf, labels, torch.tensor([7]), n_regions=2, pooling="weighted")
    assert r.cls.tolist() == [1, 1, 1, 1] and r.video.tolist() == [7] * 4
    got = {
        (int(k), int(m)): (f, bool(v)) for k, m, f, v in zip(r.kind, r.region, r.feat, r.valid, strict=True)
    }
    # action region 0: only snippet 0 (A=1, S=0.5) -> direction (1, 0)
    assert torch.allclose(got[(ACT, 0)][0], torch.tensor([1.0, 0.0]))
    # action region 1: snippets 2 (w=1) and 3 (w=0.5): (1,1) + 0.5*(3,0) = (2.5, 1) -> normalised
    assert torch.allclose(got[(ACT, 1)][0], torch.tensor([2.5, 1.0]) / math.hypot(2.5, 1.0))
    # background region 0: snippet 1 (1-A=1, S=1) -> (0, 1); background region 1 has weight 0
    assert torch.allclose(got[(BG, 0)][0], torch.tensor([0.0, 1.0]))
    assert got[(BG, 1)][1] is False and got[(ACT, 1)][1] is True
    # the paper's pooling: the plain average of A*S*X over the region's 2 snippets, no normalisation
    r = region_features(x, pseudo, conf, labels, torch.tensor([7]), n_regions=2, pooling="mean")
    got = {(int(k), int(m)): f for k, m, f in zip(r.kind, r.region, r.feat, strict=True)}
    assert torch.allclose(got[(ACT, 0)], torch.tensor([0.25, 0.0]))  # (0.5 * (1, 0) + 0) / 2
    assert torch.allclose(got[(ACT, 1)], torch.tensor([1.25, 0.5]))  # ((1, 1) + 0.5 * (3, 0)) / 2
    assert torch.allclose(got[(BG, 0)], torch.tensor([0.0, 0.5]))


def test_background_video_rule_drops_the_videos_other_actions():
    # one video labelled with classes 0 and 1, T=4, M=1; snippet 1 is class 1's action only
    x = torch.eye(4)[None]  # (1, 4, 4): snippet t has feature e_t
    pseudo = torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]]])
    conf = torch.ones(1, 4, 3)
    labels = torch.tensor([[1, 1]])
    for rule, expect in (("class", [0, 1, 1, 1]), ("video", [0, 0, 1, 1])):
        r = region_features(
            x, pseudo, conf, labels, torch.tensor([0]), 1, pooling="weighted", background=rule
        )
        bg0 = r.feat[(r.cls == 0) & (r.kind == BG)][0]  # class 0's background region
        assert torch.allclose(bg0, torch.tensor(expect, dtype=torch.float32) / math.sqrt(sum(expect)))


@pytest.mark.parametrize("pooling", ["mean", "weighted"])
@pytest.mark.parametrize("background", ["class", "video"])
def test_region_features_match_a_loop_over_videos_classes_regions(pooling, background):
    g = torch.Generator().manual_seed(0)
    b, t, p, c, m = 4, 11, 6, 5, 3
    x = torch.randn(b, t, p, generator=g)
    pseudo = (torch.rand(b, t, c + 1, generator=g) > 0.5).float()
    conf = torch.rand(b, t, c + 1, generator=g)
    conf[2, :, :] = 0.0  # a video whose regions all have zero weight
    labels = torch.zeros(b, c)
    labels[0, 1] = labels[1, 0] = labels[1, 4] = labels[2, 3] = labels[3, 2] = 1
    videos = torch.tensor([5, 0, 9, 2])
    r = region_features(x, pseudo, conf, labels, videos, m, pooling=pooling, background=background)
    region = torch.div(torch.arange(t) * m, t, rounding_mode="floor")
    rows = []
    for i in range(b):
        for k in range(c):
            if not labels[i, k]:
                continue
            not_act = 1 - pseudo[i, :, k]
            if background == "video":
                for other in range(c):
                    if other != k and labels[i, other]:
                        not_act = not_act * (1 - pseudo[i, :, other])
            for kind, w in (
                (ACT, pseudo[i, :, k] * conf[i, :, k]),
                (BG, not_act * conf[i, :, k]),
            ):
                for j in range(m):
                    wj = w * (region == j)
                    if pooling == "weighted":
                        mean = (wj[:, None] * x[i]).sum(0) / max(float(wj.sum()), 1e-12)
                        f = mean / mean.norm().clamp_min(1e-12)
                    else:
                        f = (wj[:, None] * x[i]).sum(0) / float((region == j).sum())
                    rows.append((int(videos[i]), k, kind, j, f, bool(wj.sum() > 0)))
    assert len(rows) == len(r.feat)
    for n, (v, k, kind, j, f, ok) in enumerate(rows):
        assert (int(r.video[n]), int(r.cls[n]), int(r.kind[n]), int(r.region[n])) == (v, k, kind, j)
        assert bool(r.valid[n]) is ok
        assert torch.allclose(r.feat[n], f, atol=1e-6)


def test_pair_enumeration_tiny_bank():
    # candidates: video 0 class 0 act r0,r1, bg r0; video 1 class 0 act r0, bg r0;
    # video 2 class 1 act r0, bg r0; video 0 class 1 act r0 (multi-label video)
    cand = [
        (0, 0, 0, ACT),
        (0, 0, 1, ACT),
        (0, 0, 0, BG),
        (1, 0, 0, ACT),
        (1, 0, 0, BG),
        (2, 1, 0, ACT),
        (2, 1, 0, BG),
        (0, 1, 0, ACT),
    ]
    c = torch.tensor(cand)
    anchor = torch.tensor([[0, 0, 0]])  # video 0, class 0, region 0 (itself is candidate 0)
    pos, neg = pair_masks(
        anchor[:, 0], anchor[:, 1], anchor[:, 2], c[:, 0], c[:, 1], c[:, 2], c[:, 3], "bank"
    )
    assert pos[0].nonzero().flatten().tolist() == [1, 3]  # same class: same video other region, other video
    # negatives: every background region, and other-class actions of OTHER videos only
    assert neg[0].nonzero().flatten().tolist() == [2, 4, 5, 6]
    pos_v, neg_v = pair_masks(
        anchor[:, 0], anchor[:, 1], anchor[:, 2], c[:, 0], c[:, 1], c[:, 2], c[:, 3], "video"
    )
    assert pos_v[0].nonzero().flatten().tolist() == [1]
    assert neg_v[0].nonzero().flatten().tolist() == [2]


def test_loss_against_hand_computation():
    # batch: video 0, class 0: act r0 = e1, act r1 = e2, bg r0 = e3 ; bank: video 1 class 0 act = e1
    s = 1 / math.sqrt(2)
    batch = regions_from(
        [(0, 0, 0, ACT, 1), (0, 0, 1, ACT, 1), (0, 0, 0, BG, 1)],
        [[1, 0, 0], [s, s, 0], [0, 0, 1]],
    )
    labels = np.array([[1], [1]])
    bank = RegionBank(labels, n_regions=2, dim=3)
    bank.update(
        regions_from(
            [(1, 0, 0, ACT, 1), (1, 0, 1, ACT, 0), (1, 0, 0, BG, 1)], [[1, 0, 0], [1, 0, 0], [0, 1, 0]]
        )
    )
    tau = 0.5
    loss, terms = dcc_loss(batch, bank, "bank", tau)
    # anchor a0 = e1: pos {a1: s, bank act: 1}, neg {bg: 0, bank bg (0,1,0): 0}
    l0 = -math.log((math.exp(s / tau) + math.exp(1 / tau)) / (math.exp(s / tau) + math.exp(1 / tau) + 2))
    # anchor a1 = (s,s,0): pos {a0: s, bank act: s}, neg {bg: 0, bank bg: s}
    l1 = -math.log(2 * math.exp(s / tau) / (3 * math.exp(s / tau) + 1))
    assert loss.item() == pytest.approx((l0 + l1) / 2, rel=1e-5)
    assert terms["anchors"] == 2
    # batch scope ignores the bank
    loss_b, _ = dcc_loss(batch, bank, "batch", tau)
    lb = -math.log(math.exp(s / tau) / (math.exp(s / tau) + 1))
    assert loss_b.item() == pytest.approx(lb, rel=1e-5)


def test_uniform_value_from_the_candidate_counts():
    # batch: video 0 class 0 act r0, r1, r2 and bg r0; video 1 class 1 act r0, bg r0, r1.
    # bank: video 2 class 0 act r0 (bg r0 empty). Counts, scope bank:
    #   anchors of video 0 (3): pos = 2 other regions + 1 bank act = 3; neg = bg of v0 + v1 act
    #   + 2 bg of v1 = 4 -> log(7/3); the anchor of video 1 has no positive (not counted).
    rows = [(0, 0, 0, ACT, 1), (0, 0, 1, ACT, 1), (0, 0, 2, ACT, 1), (0, 0, 0, BG, 1)]
    rows += [(1, 1, 0, ACT, 1), (1, 1, 0, BG, 1), (1, 1, 1, BG, 1)]
    batch = regions_from(rows, [[1.0, 0.0]] * len(rows))  # every logit equal
    labels = np.array([[1, 0], [0, 1], [1, 0]])
    bank = RegionBank(labels, n_regions=3, dim=2)
    bank.update(regions_from([(2, 0, 0, ACT, 1), (2, 0, 0, BG, 0)], [[1.0, 0.0], [1.0, 0.0]]))
    loss, terms = dcc_loss(batch, bank, "bank", 0.1)
    assert terms["anchors"] == 3
    assert terms["dcc_uniform"] == pytest.approx(math.log(7 / 3), rel=1e-9)
    assert loss.item() == pytest.approx(terms["dcc_uniform"], rel=1e-6)  # equal logits: the uniform value
    # batch scope: pos 2, neg 1 (bg of v0) + 1 (v1's act) + 2 (v1's bg) -> log(6/2)
    loss_b, terms_b = dcc_loss(batch, bank, "batch", 0.1)
    assert terms_b["dcc_uniform"] == pytest.approx(math.log(3), rel=1e-9)
    assert loss_b.item() == pytest.approx(math.log(3), rel=1e-6)
    # features that separate the classes bring the loss below the uniform value
    feats = [[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 4
    loss_s, terms_s = dcc_loss(regions_from(rows, feats), bank, "bank", 0.1)
    assert terms_s["dcc_uniform"] == pytest.approx(math.log(7 / 3), rel=1e-9)
    assert loss_s.item() < 0.5 * terms_s["dcc_uniform"]


def test_bank_update_overwrite_and_momentum():
    labels = np.array([[1, 0], [1, 1]])
    bank = RegionBank(labels, n_regions=2, dim=2)
    assert len(bank) == 3 * 2 * 2  # (video, class) pairs x kind x region
    r = regions_from([(1, 1, 1, BG, 1)], [[0, 1]])
    bank.update(r)
    slot = bank.slots(r.video, r.cls, r.kind, r.region)
    assert bank.valid.sum() == 1 and torch.allclose(bank.feat[slot], torch.tensor([[0.0, 1.0]]))
    bank.update(regions_from([(1, 1, 1, BG, 1)], [[1, 0]]))
    assert torch.allclose(bank.feat[slot], torch.tensor([[1.0, 0.0]]))  # overwritten
    mom = RegionBank(labels, 2, 2, momentum=0.5)
    mom.update(regions_from([(1, 1, 1, BG, 1)], [[0, 1]]))
    mom.update(regions_from([(1, 1, 1, BG, 1)], [[1, 0]]))
    assert torch.allclose(mom.feat[slot], torch.tensor([[s := 1 / math.sqrt(2), s]]))
    with pytest.raises(ValueError, match="outside"):
        bank.slots(torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), torch.tensor([0]))
    state = bank.state_dict()
    fresh = RegionBank(labels, 2, 2)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.feat, bank.feat) and torch.equal(fresh.valid, bank.valid)


def test_gradients_reach_only_head_and_embeddings():
    torch.manual_seed(0)
    b, t, h, c = 3, 10, 6, 2
    emb = torch.randn(b, t, h, requires_grad=True)
    head = ProjectionHead(h, 4)
    pseudo = torch.randint(0, 2, (b, t, c + 1)).float().requires_grad_(True)
    conf = torch.rand(b, t, c + 1, requires_grad=True)
    labels = torch.tensor([[1, 0], [1, 0], [0, 1]])
    bank = RegionBank(labels.numpy(), 5, 4)
    bank.update(
        region_features(head(emb).detach(), pseudo.detach(), conf.detach(), labels, torch.arange(3), 5)
    )
    bank_before = bank.feat.clone()
    r = region_features(head(emb), pseudo, conf, labels, torch.arange(3), 5)
    loss, _ = dcc_loss(r, bank, "bank", 0.1)
    loss.backward()
    # pseudo-labels and confidence are constants; the bank is never written by the loss
    assert pseudo.grad is None and conf.grad is None
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    assert torch.equal(bank.feat, bank_before)
    assert not bank.feat.requires_grad


def test_beta_schedule():
    assert beta_at(0, 100, 0.1, 10000, "exp") == pytest.approx(0.1)
    assert beta_at(99, 100, 0.1, 10000, "exp") == pytest.approx(10000)
    assert beta_at(50, 101, 0.0, 1.0, "linear") == pytest.approx(0.5)
    assert beta_at(5, 100, 0.1, 3.0, "constant") == 3.0
    assert beta_at(3, 100, 0.1, 3.0, "linear", warmup=10) == 0.1
    with pytest.raises(ValueError):
        beta_at(3, 100, 0.0, 3.0, "exp")


@pytest.mark.parametrize("tau", [0.1, 0.004])  # 0.004: positives far below the max underflow
def test_info_nce_matches_a_float64_loop(tau):
    from wtalcli.dcc.contrast import _info_nce

    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=1)
    c = torch.nn.functional.normalize(torch.randn(40, 8, generator=g), dim=1)
    pos = torch.rand(6, 40, generator=g) < 0.2
    pos[:, 0] = True
    allowed = pos | (torch.rand(6, 40, generator=g) < 0.5)
    logits = (a @ c.T / tau).requires_grad_()
    got = _info_nce(logits, pos, allowed)
    l64 = logits.detach().double()
    for i in range(6):
        want = torch.logsumexp(l64[i][allowed[i]], 0) - torch.logsumexp(l64[i][pos[i]], 0)
        assert got[i].item() == pytest.approx(want.item(), rel=1e-5, abs=1e-5)
    got.sum().backward()
    assert torch.isfinite(logits.grad).all()
    # d/dl of the row loss: softmax over allowed minus softmax over positives
    sm_all = torch.softmax(l64.masked_fill(~allowed, float("-inf")), 1)
    sm_pos = torch.softmax(l64.masked_fill(~pos, float("-inf")), 1)
    assert torch.allclose(logits.grad.double(), sm_all - sm_pos, atol=1e-5)


def _reference_loss(regions: Regions, bank: RegionBank | None, scope: str, tau: float):
    """The InfoNCE of the method written out per anchor in float64 (differentiable in
    ``regions.feat``): candidates are the batch's valid regions and (scope bank) the bank's valid
    slots of videos outside the batch. Returns (mean loss, anchors, positives, negatives per anchor)."""
    feat = regions.feat.double()
    meta = (regions.video, regions.cls, regions.region, regions.kind)
    rows = list(zip(*(t.tolist() for t in meta), strict=True))
    ok = regions.valid.tolist()
    cands = [(feat[j], rows[j]) for j in range(len(rows)) if ok[j]]
    if scope == "bank" and bank is not None:
        batch_videos = set(regions.video.tolist())
        for s in range(len(bank)):
            v = int(bank.video[s])
            if bool(bank.valid[s]) and v not in batch_videos:
                meta = (v, int(bank.cls[s]), int(bank.region[s]), int(bank.kind[s]))
                cands.append((bank.feat[s].double(), meta))
    losses, positives, negatives = [], [], []
    for i, (v, c, r, k) in enumerate(rows):
        if not ok[i] or k != ACT:
            continue
        pos, allowed = [], []
        for f, (cv, cc, cr, ck) in cands:
            itself = (cv, cc, cr, ck) == (v, c, r, ACT)
            p = ck == ACT and cc == c and not itself
            n = ck == BG or (ck == ACT and cc != c and cv != v)
            if scope == "video" and cv != v:
                p = n = False
            logit = feat[i] @ f / tau
            if p:
                pos.append(logit)
            if p or n:
                allowed.append(logit)
        if pos:
            losses.append(torch.logsumexp(torch.stack(allowed), 0) - torch.logsumexp(torch.stack(pos), 0))
            positives.append(len(pos))
            negatives.append(len(allowed) - len(pos))
    return torch.stack(losses).mean(), len(losses), positives, negatives


@pytest.mark.parametrize("pooling", ["mean", "weighted"])
@pytest.mark.parametrize("tau", [0.1, 0.004])  # 0.004 with unit features: positives underflow
@pytest.mark.parametrize("scope", ["video", "batch", "bank"])
def test_loss_matches_a_per_anchor_reference(scope, tau, pooling):
    g = torch.Generator().manual_seed(1)
    rng = np.random.default_rng(1)
    n_videos, n_classes, m, dim, t = 12, 4, 3, 8, 9
    labels = np.zeros((n_videos, n_classes), np.int64)
    labels[np.arange(n_videos), rng.integers(0, n_classes, n_videos)] = 1
    labels[[0, 3, 7], 1] = 1  # multi-label videos, two of them in the batch
    bank = RegionBank(labels, m, dim)

    def random_regions(videos):  # features, pseudo-labels and confidence drawn at random
        n = len(videos)
        return region_features(
            torch.nn.functional.normalize(torch.randn(n, t, dim, generator=g), dim=-1),
            (torch.rand(n, t, n_classes + 1, generator=g) > 0.5).float(),
            torch.rand(n, t, n_classes + 1, generator=g),
            torch.from_numpy(labels[videos]),
            torch.from_numpy(videos),
            m,
            pooling,
        )

    bank.update(random_regions(np.arange(n_videos)))
    bank.valid[::7] = False  # some empty slots
    regions = random_regions(np.array([0, 2, 3, 5]))  # the bank's slots of these are not candidates
    regions.feat = regions.feat.detach().requires_grad_()
    loss, terms = dcc_loss(regions, bank, scope, tau)
    feat64 = regions.feat.detach().double().requires_grad_()
    want, n_anchors, positives, negatives = _reference_loss(
        Regions(feat64, regions.video, regions.cls, regions.region, regions.kind, regions.valid),
        bank,
        scope,
        tau,
    )
    assert n_anchors > 3
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert terms["anchors"] == n_anchors
    assert terms["positives"] == pytest.approx(np.mean(positives))
    assert terms["negatives"] == pytest.approx(np.mean(negatives))
    uniform = np.mean([math.log((p + n) / p) for p, n in zip(positives, negatives, strict=True)])
    assert terms["dcc_uniform"] == pytest.approx(uniform, rel=1e-9)
    bank.update(random_regions(np.arange(n_videos)))  # as a training step does, before its backward
    loss.backward()
    want.backward()
    assert torch.allclose(regions.feat.grad.double(), feat64.grad, atol=1e-4 * float(feat64.grad.abs().max()))
