"""Fusion metrics on hand-checkable cases: constants, identical images, known histograms, symmetries.

Each test would fail for a wrong log base, constant, window, normaliser or axis; the values pinned
against the reference implementations themselves are in test_metrics_reference.py.
"""

import math

import numpy as np
import pytest
from scipy.signal import correlate2d

from cldyn_cli.metrics import HIGHER_IS_BETTER, METRIC_NAMES, METRICS, compute_all, parse_metric_names
from cldyn_cli.metrics.filters import block_sums, filter_same_fft, filter_valid, freq_radius, gaussian_1d
from cldyn_cli.metrics.testcard import make_triple

CONVS = ("vifb", "cddfuse")


def u8(x) -> np.ndarray:
    return np.asarray(x, dtype=np.uint8)


@pytest.fixture(scope="module")
def triple():
    return make_triple(48, 64, 0)


def test_registry_names_and_directions() -> None:
    assert METRIC_NAMES == ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM", "Qcb", "Qcv", "Qcc",
                            "CC", "PSNR")
    assert set(HIGHER_IS_BETTER) == set(METRICS)
    assert [n for n, up in HIGHER_IS_BETTER.items() if not up] == ["Qcv"]
    for fn in METRICS.values():
        doc = fn.__doc__ or ""
        assert "better" in doc and "Reference" in doc and "Convention" in doc


def test_compute_all_api(triple) -> None:
    a, b, f = triple
    out = compute_all(a, b, f)
    assert list(out) == list(METRIC_NAMES) and all(isinstance(v, float) for v in out.values())
    assert list(compute_all(a, b, f, metrics="mi,EN")) == ["EN", "MI"]
    assert parse_metric_names(["Qcv", "qabf"]) == ["Qabf", "Qcv"]
    with pytest.raises(ValueError, match="unknown metric"):
        compute_all(a, b, f, metrics=["FMI"])
    with pytest.raises(ValueError, match="unknown metric convention"):
        compute_all(a, b, f, convention="matlab")
    with pytest.raises(ValueError, match="sizes differ"):
        compute_all(a, b, f[:, :-1])
    with pytest.raises(ValueError, match="uint8"):
        compute_all(a.astype(np.float32), b, f)


# ---------------------------------------------------------------------------------------------
# Single-image metrics


def test_entropy_of_known_histograms() -> None:
    two = u8(np.tile([0, 255], (8, 8)))
    four = u8(np.tile([0, 1, 2, 3], (8, 4)))
    for conv in CONVS:
        assert METRICS["EN"](None, None, two, conv) == pytest.approx(1.0, abs=1e-12)  # bits, not nats
        assert METRICS["EN"](None, None, four, conv) == pytest.approx(2.0, abs=1e-12)
        assert METRICS["EN"](None, None, u8(np.full((8, 8), 77)), conv) == 0.0


def test_sd_is_population_std() -> None:
    f = u8(np.tile([10, 12], (4, 4)))
    for conv in CONVS:
        assert METRICS["SD"](None, None, f, conv) == pytest.approx(1.0, abs=1e-12)


def test_sf_and_ag_normalisers_on_a_ramp() -> None:
    h, w, c = 10, 20, 3.0
    f = u8(np.tile(np.arange(w) * c, (h, 1)))
    # horizontal differences are all c, vertical ones 0
    assert METRICS["SF"](None, None, f, "vifb") == pytest.approx(c * math.sqrt((w - 1) / w), rel=1e-12)
    assert METRICS["SF"](None, None, f, "cddfuse") == pytest.approx(c, rel=1e-12)
    # MATLAB gradient gives gx = c everywhere (central inside, one-sided at the borders), gy = 0
    assert METRICS["AG"](None, None, f, "vifb") == pytest.approx(h * w * c / math.sqrt(2) / ((h - 1) * (w - 1)),
                                                               rel=1e-12)
    assert METRICS["AG"](None, None, f, "cddfuse") == pytest.approx(c / math.sqrt(2), rel=1e-12)


def test_constant_fused_image() -> None:
    a, b, _ = make_triple(48, 64, 0)
    f = u8(np.full(a.shape, 90))
    for conv in CONVS:
        out = compute_all(a, b, f, conv)
        assert out["EN"] == out["SD"] == out["SF"] == out["AG"] == 0.0
        assert out["MI"] == pytest.approx(0.0, abs=1e-12)  # H(F) = 0 and H(X, F) = H(X)
        assert math.isnan(out["CC"]) and math.isnan(out["Qcc"])  # 0/0, as in both references
        assert math.isnan(out["Qcb"]) and math.isnan(out["Qcv"])  # min-max rescale divides 0 by 0


# ---------------------------------------------------------------------------------------------
# Metrics against the sources


def test_mi_is_in_nats() -> None:
    f = u8(np.tile([0, 200], (8, 8)))
    b = u8(np.full((8, 16), 5))  # constant: no information about F
    for conv in CONVS:
        assert METRICS["MI"](f, b, f, conv) == pytest.approx(math.log(2), abs=1e-12)


@pytest.mark.parametrize("conv", CONVS)
def test_mi_ignores_relabelling_and_equals_entropy_for_identity(triple, conv: str) -> None:
    a, b, f = triple
    mi = METRICS["MI"](a, b, f, conv)
    # Swapping grey levels pairwise (0<->1, 2<->3, ...) renames every level without merging any and
    # keeps the value range, so the joint histograms are only permuted.
    swapped = u8(f ^ 1)
    assert len(np.unique(swapped)) == len(np.unique(f)) and not np.array_equal(swapped, f)
    assert METRICS["MI"](a, b, swapped, conv) == pytest.approx(mi, rel=1e-12)
    en_nats = METRICS["EN"](a, b, a) * math.log(2)
    assert METRICS["MI"](a, u8(np.zeros_like(a)), a) == pytest.approx(en_nats, rel=1e-12)


def test_cc_qcc_and_scd_hand_values(triple) -> None:
    a, _, _ = triple
    ae = u8(a - a % 2)  # even values, so that ae // 2 + 3 is exactly affine in ae
    lin = u8(ae // 2 + 3)
    for conv in CONVS:
        assert METRICS["CC"](ae, ae, lin, conv) == pytest.approx(1.0, abs=1e-12)
        assert METRICS["Qcc"](ae, ae, u8(255 - ae), conv) == pytest.approx(-1.0, abs=1e-12)
    x = u8(np.arange(48 * 64).reshape(48, 64) * 37 % 101)
    y = u8(np.arange(48 * 64).reshape(48, 64) * 53 % 127)
    # F = A + B: corr(F - B, A) = corr(A, A) = 1 and likewise for B
    assert METRICS["SCD"](x, y, u8(x.astype(int) + y), "vifb") == pytest.approx(2.0, abs=1e-12)
    assert math.isnan(METRICS["SCD"](x, y, x))  # F - A constant: undefined in both references


def test_psnr_both_formulas() -> None:
    h, w, d = 12, 20, 4
    f = u8(np.tile(np.arange(w) * 10, (h, 1)))
    src = u8(f + d)
    assert METRICS["PSNR"](src, src, f, "cddfuse") == pytest.approx(10 * math.log10(int(f.max()) ** 2 / d ** 2),
                                                                      rel=1e-12)
    err = math.sqrt(h * w * d * d) / (h * w)  # VIFB's "mse": root of the sum of squares over the pixel count
    assert METRICS["PSNR"](src, src, f, "vifb") == pytest.approx(20 * math.log10(255 / math.sqrt(err)), rel=1e-12)


def test_ssim_constants_on_flat_images() -> None:
    a = u8(np.full((20, 20), 100))
    f = u8(np.full((20, 20), 110))
    # flat windows: variances 0, so SSIM = (2 mu_a mu_f + C1) / (mu_a^2 + mu_f^2 + C1), per source
    for conv, c1 in (("vifb", (0.01 * 255) ** 2), ("cddfuse", (0.01 * 2) ** 2)):
        want = 2 * (2 * 100 * 110 + c1) / (100 ** 2 + 110 ** 2 + c1)
        assert METRICS["SSIM"](a, a, f, conv) == pytest.approx(want, rel=1e-12)


def test_ssim_window_and_sample_covariance() -> None:
    rng = np.random.default_rng(3)
    a = u8(rng.integers(0, 256, (30, 30)))
    f = u8(rng.integers(0, 256, (30, 30)))
    # independent direct computation of both conventions' single SSIM maps
    for conv, win, n, c1, c2, norm in (
            ("vifb", np.outer(gaussian_1d(11, 1.5), gaussian_1d(11, 1.5)), 11, 6.5025, 58.5225, 1.0),
            ("cddfuse", np.full((7, 7), 1 / 49), 7, 4e-4, 3.6e-3, 49 / 48)):
        x, y = a.astype(float), f.astype(float)
        m = lambda z: correlate2d(z, win, mode="valid")  # noqa: E731
        mx, my = m(x), m(y)
        vx, vy, cxy = norm * (m(x * x) - mx ** 2), norm * (m(y * y) - my ** 2), norm * (m(x * y) - mx * my)
        s = ((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))).mean()
        assert METRICS["SSIM"](a, a, f, conv) == pytest.approx(2 * s, rel=1e-10)
        assert m(x).shape == (30 - n + 1, 30 - n + 1)


def test_identical_images(triple) -> None:
    a, _, _ = triple
    for conv in CONVS:
        out = compute_all(a, a, a, conv)
        assert out["SSIM"] == pytest.approx(2.0, rel=1e-12)
        assert out["VIF"] == pytest.approx(2.0, rel=1e-9)
        assert out["CC"] == pytest.approx(1.0, rel=1e-12)
        assert out["Qcb"] == pytest.approx(1.0, abs=1e-12)
        assert out["Qcv"] == pytest.approx(0.0, abs=1e-9)
        assert out["PSNR"] == math.inf
        en_nats = out["EN"] * math.log(2)
        assert out["MI"] == pytest.approx(2 * en_nats, rel=1e-12)


def test_qabf_identical_images_and_the_equal_strength_quirk() -> None:
    tg, ta = 0.9994, 0.9879
    full = tg * ta / (1 + math.exp(-22 * (1 - 0.8)))  # strength term saturated, orientation term at A = 1
    # steep edges only (Sobel strengths >= 4): the strength sigmoid saturates in both conventions
    steep = u8(np.kron(np.array([[0, 200], [90, 30]]), np.ones((12, 12))))
    for conv in CONVS:
        assert METRICS["Qabf"](steep, steep, steep, conv) == pytest.approx(full, rel=1e-12)
    # one raised pixel: its neighbours have Sobel strengths 2 and sqrt(2), equal in source and fused.
    # VIFB's G = 255 g saturates the strength sigmoid; CDDFuse's G = g leaves 1 / (1 + e^{-15 (sqrt2 - 0.5)})
    dot = np.zeros((9, 9), np.uint8)
    dot[4, 4] = 1
    vifb = METRICS["Qabf"](dot, dot, dot, "vifb")
    cdd = METRICS["Qabf"](dot, dot, dot, "cddfuse")
    assert vifb == pytest.approx(full, rel=1e-12)
    s2 = math.sqrt(2)
    want = full * (4 * 2 / (1 + math.exp(-15 * 1.5)) + 4 * s2 / (1 + math.exp(-15 * (s2 - 0.5)))) / (8 + 4 * s2)
    assert cdd == pytest.approx(want, rel=1e-12) and cdd < vifb


def test_fused_equal_to_one_source(triple) -> None:
    a, b, _ = triple
    for conv in CONVS:
        out = compute_all(a, b, a, conv)
        assert math.isnan(out["SCD"])
        assert out["PSNR"] > compute_all(a, b, b // 2, conv)["PSNR"]
        assert 0.0 < out["Qcb"] < 1.0 and out["Qcv"] > 0.0
        assert out["VIF"] > 1.0  # VIFP(A, A) = 1 plus B's share


def test_symmetric_in_the_sources(triple) -> None:
    a, b, f = triple
    for conv in CONVS:
        one, two = compute_all(a, b, f, conv), compute_all(b, a, f, conv)
        for name in METRIC_NAMES:
            assert one[name] == pytest.approx(two[name], rel=1e-12), name


def test_transposing_all_images_changes_nothing_but_qabf() -> None:
    a, b, f = make_triple(45, 70, 1)  # odd, non-square, not a multiple of 16
    for conv in CONVS:
        one, two = compute_all(a, b, f, conv), compute_all(a.T.copy(), b.T.copy(), f.T.copy(), conv)
        for name in METRIC_NAMES:
            if name == "Qabf":  # orientation atan(gy / gx) is not transposition-symmetric (pi/2 where gx = 0)
                continue
            assert one[name] == pytest.approx(two[name], rel=1e-9), name


def test_scaling_the_fused_image() -> None:
    a, b, f = make_triple(48, 64, 0)
    half = u8(f // 2)
    double = u8(half.astype(int) * 2)
    for conv in CONVS:
        one, two = compute_all(a, b, half, conv), compute_all(a, b, double, conv)
        for name in ("SD", "SF", "AG"):
            assert two[name] == pytest.approx(2 * one[name], rel=1e-12), name
        for name in ("EN", "MI", "CC", "Qcc"):
            assert two[name] == pytest.approx(one[name], rel=1e-12), name


# ---------------------------------------------------------------------------------------------
# Signal helpers with MATLAB semantics


@pytest.mark.parametrize("n", [6, 7])
def test_freq_radius_follows_freqspace(n: int) -> None:
    # freqspace(N): even N -> (-N:2:N-2)/N, odd N -> (-N+1:2:N-1)/N, centred at index floor(N/2)
    grid = (np.arange(-n, n - 1, 2) if n % 2 == 0 else np.arange(-n + 1, n, 2)) / n
    r = freq_radius((n, 4), 1.0, 0.0)[:, 0]
    assert np.allclose(np.sort(r), np.sort(np.abs(grid)))
    assert r[0] == 0 and r[1] == pytest.approx(2 / n)
    assert freq_radius((4, n), 0.0, 3.0)[0, 1] == pytest.approx(3 * 2 / n)


def test_filters_match_direct_correlation() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((23, 31)) * 255
    k = gaussian_1d(9, 1.8)
    assert np.allclose(filter_valid(x, k), correlate2d(x, np.outer(k, k), mode="valid"), rtol=0, atol=1e-10)
    assert filter_valid(x, gaussian_1d(25, 5.0)).shape == (0, 7)  # MATLAB's empty 'valid'
    g = rng.random((31, 31))
    g = (g + g[::-1, ::-1]) / 2
    same = filter_same_fft(x, [g])[0]
    assert np.allclose(same, correlate2d(x, g, mode="same"), atol=1e-9)


def test_block_sums_zero_pad_partial_blocks() -> None:
    x = np.ones((20, 35))
    s = block_sums(x, 16)
    assert s.shape == (2, 3)
    assert s.tolist() == [[256, 256, 48], [64, 64, 12]]
