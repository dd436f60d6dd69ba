"""torchbss.plot: every figure is written at its size, is not blank, and shows known signals
where they are (read back from the PNG); beam patterns are checked numerically."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.image import imread  # noqa: E402

from torchbss import plot  # noqa: E402
from torchbss.signal.stft import stft  # noqa: E402

FS = 8000


def _png(path, fig):
    """The saved PNG as ``(H, W, 3)`` floats; checks its size against the figure's."""
    image = imread(path)[..., :3]
    width, height = fig.get_size_inches() * fig.dpi
    assert image.shape[:2] == (round(height), round(width))
    assert image.std() > 0.05, "blank figure"
    return image


def _luma(image):
    return image @ np.array([0.299, 0.587, 0.114])


def _box(fig, ax, image):
    """Pixel rows/cols ``(r0, r1, c0, c1)`` of an axes' drawing area in the PNG."""
    x0, y0, x1, y1 = ax.get_window_extent().extents
    height = image.shape[0]
    return round(height - y1) + 2, round(height - y0) - 2, round(x0) + 2, round(x1) - 2


def _pixel(ax, image, x, y):
    """PNG ``(row, col)`` of the data point ``(x, y)`` of ``ax``."""
    px, py = ax.transData.transform((x, y))
    return image.shape[0] - py, px


def _colour_mask(image, colour, tol=0.12):
    return np.abs(image - np.array(to_rgb(colour))).max(-1) < tol


def _tone(freq, seconds=1.0, fs=FS, amp=0.5):
    t = torch.arange(round(seconds * fs), dtype=torch.float64) / fs
    return amp * torch.sin(2 * math.pi * freq * t)


# --------------------------------------------------------------------------------------------
# spectrogram grid
# --------------------------------------------------------------------------------------------


def test_spectrogram_of_a_sine_is_brightest_at_its_frequency(tmp_path):
    path = tmp_path / "spec.png"
    fig = plot.spectrogram_grid(_tone(1000.0)[None], sample_rate=FS, n_fft=512, save=path)
    image = _png(path, fig)
    ax = fig.axes[0]
    r0, r1, c0, c1 = _box(fig, ax, image)
    rows = _luma(image[r0:r1, c0:c1]).mean(1)
    brightest = r0 + int(np.argmax(rows))
    expected, _ = _pixel(ax, image, 0.5, 1000.0)
    assert abs(brightest - expected) <= 2


def test_spectrogram_grid_layout_and_shared_colour_scale(tmp_path):
    low, high = _tone(500.0), _tone(3000.0)
    references = torch.stack([low, high])
    estimates = torch.stack([low, 1e-3 * high])  # second estimate 60 dB quieter
    mixture = torch.stack([low + high, 0.5 * (low + high), low - high])  # 3 mics, 2 sources
    path = tmp_path / "grid.png"
    fig = plot.spectrogram_grid(
        mixture,
        references=references,
        estimates=estimates,
        sample_rate=FS,
        n_fft=512,
        source_names=["low", "high"],
        save=path,
    )
    image = _png(path, fig)
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert [ax.get_title() for ax in panels] == [
        "mixture, mic 0",
        "mixture, mic 1",
        "mixture, mic 2",
        "reference: low",
        "reference: high",
        "estimate: low",
        "estimate: high",
    ]
    for ax, freq in ((panels[3], 500.0), (panels[4], 3000.0), (panels[5], 500.0)):
        r0, r1, c0, c1 = _box(fig, ax, image)
        brightest = r0 + int(np.argmax(_luma(image[r0:r1, c0:c1]).mean(1)))
        assert abs(brightest - _pixel(ax, image, 0.5, freq)[0]) <= 2, ax.get_title()
    # one colour range: the quiet estimate is much darker than its reference
    r0, r1, c0, c1 = _box(fig, panels[4], image)
    loud = _luma(image[r0:r1, c0:c1]).max()
    r0, r1, c0, c1 = _box(fig, panels[6], image)
    quiet = _luma(image[r0:r1, c0:c1]).max()
    assert quiet < 0.6 * loud


def test_spectrogram_grid_accepts_numpy_and_rejects_nan():
    fig = plot.spectrogram_grid(np.sin(np.arange(4000) * 0.3), sample_rate=FS)
    assert fig.axes[0].get_ylabel() == "frequency (Hz)"
    bad = torch.randn(2, 4000)
    bad[1, 10] = float("nan")
    with pytest.raises(ValueError, match="estimates contains 1 NaN"):
        plot.spectrogram_grid(torch.randn(2, 4000), estimates=bad, sample_rate=FS)
    with pytest.raises(ValueError, match="at least one of"):
        plot.spectrogram_grid(sample_rate=FS)
    with pytest.raises(ValueError, match="source_names"):
        plot.spectrogram_grid(estimates=torch.randn(2, 400), sample_rate=FS, source_names=["a"])


# --------------------------------------------------------------------------------------------
# NMF factors
# --------------------------------------------------------------------------------------------


def test_nmf_factors_show_each_source_at_its_basis_and_frames(tmp_path):
    n_freq, n_basis, n_frames = 65, 3, 40
    basis = torch.full((2, n_freq, n_basis), 1e-4)
    basis[0, 20, :] = 1.0  # source 0 lives at bin 20, source 1 at bin 50
    basis[1, 50, :] = 1.0
    activations = torch.full((2, n_basis, n_frames), 1e-4)
    activations[0, :, 10:20] = 1.0  # source 0 is active in frames 10-19 only
    activations[1] = 1.0
    path = tmp_path / "nmf.png"
    fig = plot.nmf_factors(basis, activations, save=path)
    image = _png(path, fig)
    for k, f_bin in ((0, 20), (1, 50)):
        ax = fig.axes[3 * k + 2]  # model spectrogram of source k
        assert ax.get_title() == f"source {k}: model spectrogram"
        r0, r1, c0, c1 = _box(fig, ax, image)
        brightest = r0 + int(np.argmax(_luma(image[r0:r1, c0:c1]).mean(1)))
        assert abs(brightest - _pixel(ax, image, 0, f_bin)[0]) <= 2
    ax = fig.axes[1]  # activations of source 0: bright columns are frames 10..19
    r0, r1, c0, c1 = _box(fig, ax, image)
    cols = _luma(image[r0:r1, c0:c1]).mean(0) > 0.5
    bright = np.flatnonzero(cols) + c0
    assert abs(bright.min() - _pixel(ax, image, 9.5, 1)[1]) <= 2
    assert abs(bright.max() - _pixel(ax, image, 19.5, 1)[1]) <= 2


def test_nmf_factors_axes_in_hz_and_seconds_and_bad_input():
    basis, activations = torch.rand(3, 129, 4), torch.rand(3, 4, 30)
    fig = plot.nmf_factors(basis, activations, sample_rate=16000, hop_length=128)
    assert fig.axes[0].get_ylabel() == "frequency (Hz)"
    assert fig.axes[2].get_ylim()[1] == pytest.approx(8000 + 31.25)  # half a bin above Nyquist
    assert fig.axes[-3].get_xlabel() == "time (s)"
    activations[1, 2, 3] = float("inf")
    with pytest.raises(ValueError, match="activations contains 1 NaN/inf"):
        plot.nmf_factors(basis, activations)
    with pytest.raises(ValueError, match="agree on sources and n_basis"):
        plot.nmf_factors(basis, torch.rand(3, 5, 30))
    with pytest.raises(ValueError, match="basis must be non-negative"):
        plot.nmf_factors(-basis, torch.rand(3, 4, 30))


# --------------------------------------------------------------------------------------------
# convergence, frame-wise SI-SDR
# --------------------------------------------------------------------------------------------


def _curve_row(image, ax, colour, x):
    """Median PNG row of the pixels of ``colour`` in the column of data ``x``."""
    _, col = _pixel(ax, image, x, 0.0)
    r0, r1, _, _ = _box(ax.figure, ax, image)
    column = _colour_mask(image[r0:r1, round(col)], colour)
    assert column.any(), f"no curve of colour {colour} at x={x}"
    return r0 + float(np.median(np.flatnonzero(column)))


def test_convergence_draws_each_cost_where_it_is(tmp_path):
    it = torch.arange(41, dtype=torch.float64)
    costs = {"fast": 100 * torch.exp(-it / 3), "slow": 100 - 2 * it}
    path = tmp_path / "conv.png"
    fig = plot.convergence(costs, save=path)
    image = _png(path, fig)
    ax = fig.axes[0]
    for name, colour in (("fast", "C0"), ("slow", "C1")):
        for x in (5, 20, 35):
            expected, _ = _pixel(ax, image, x, float(costs[name][x]))
            assert abs(_curve_row(image, ax, colour, x) - expected) <= 3, (name, x)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["fast", "slow"]


def test_convergence_relative_runs_and_bad_input():
    runs = torch.stack([torch.linspace(10, 1, 20), torch.linspace(12, 1, 20)])  # (runs, iters)
    fig = plot.convergence({"a": runs}, relative=True, log_x=True)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_xscale() == "log"
    assert ax.get_ylabel() == "cost - lowest cost"
    bad = torch.ones(5)
    bad[2] = float("nan")
    with pytest.raises(ValueError, match=r"costs\['AuxIVA'\] contains 1 NaN"):
        plot.convergence({"ok": torch.ones(5), "AuxIVA": bad})
    with pytest.raises(ValueError, match="non-empty mapping"):
        plot.convergence({})


def test_si_sdr_over_time_follows_the_values(tmp_path):
    values = torch.stack([torch.linspace(-10, 20, 16), torch.full((16,), 5.0)])
    times = torch.arange(16) * 0.5 + 0.5
    valid = torch.ones(2, 16, dtype=torch.bool)
    valid[1, 8:] = False  # silent frames: a gap, not a value
    path = tmp_path / "fw.png"
    fig = plot.si_sdr_over_time(values, times, valid=valid, source_names=["a", "b"], save=path)
    image = _png(path, fig)
    ax = fig.axes[0]
    for i in (2, 7, 13):
        expected, _ = _pixel(ax, image, float(times[i]), float(values[0, i]))
        assert abs(_curve_row(image, ax, "C0", float(times[i])) - expected) <= 3
    expected, _ = _pixel(ax, image, float(times[3]), 5.0)
    assert abs(_curve_row(image, ax, "C1", float(times[3])) - expected) <= 3
    _, col = _pixel(ax, image, float(times[12]), 0.0)
    r0, r1, _, _ = _box(fig, ax, image)
    assert not _colour_mask(image[r0:r1, round(col)], "C1").any()  # the gap
    assert ax.get_xlabel() == "time (s)"


def test_si_sdr_over_time_takes_a_framewise_result():
    from torchbss.metrics import framewise_si_sdr

    ref = torch.randn(2, 4 * FS, dtype=torch.float64)
    est = ref + 0.1 * torch.randn_like(ref)
    ref[1, : 2 * FS] = 0.0  # silent start: invalid frames
    result = framewise_si_sdr(ref, est, FS)
    fig = plot.si_sdr_over_time(result)
    lines = fig.axes[0].get_lines()[1:]  # after the 0 dB line
    assert np.isnan(lines[1].get_ydata()[:2]).all()
    assert np.allclose(lines[0].get_ydata(), result.values[0].numpy())
    with pytest.raises(ValueError, match="times must have one entry per frame"):
        plot.si_sdr_over_time(result.values, torch.arange(3))
    with pytest.raises(ValueError, match="values contains"):
        plot.si_sdr_over_time(torch.tensor([[1.0, float("nan")]]))


# --------------------------------------------------------------------------------------------
# beam patterns
# --------------------------------------------------------------------------------------------


def _delay_and_sum(n_freq, positions, angle_deg, fs=16000):
    freqs = torch.arange(n_freq, dtype=torch.float64) * fs / (2 * (n_freq - 1))
    a = plot.linear_array_steering(positions, freqs, torch.tensor([float(angle_deg)]).double())[
        ..., 0
    ]
    return (a.conj() / positions.shape[0])[:, None, :]  # (freq, 1, mics)


def test_delay_and_sum_row_peaks_at_its_steering_angle():
    positions = torch.arange(8, dtype=torch.float64) * 0.02  # no grating lobe up to 8 kHz
    W = _delay_and_sum(129, positions, 30.0)
    R = plot.demixing_response(W, positions, 16000)
    assert R.shape == (129, 1, 181)
    angles = torch.arange(-90, 91)
    assert (angles[R[1:, 0].argmax(-1)] == 30).all()
    torch.testing.assert_close(R[:, 0, 120], torch.ones(129, dtype=torch.float64))
    assert float(R[1:, 0].max()) <= 1 + 1e-12


def test_null_steering_row_and_the_sign_convention():
    fs, spacing, c = 16000, 0.05, 343.0
    # a far-field source at +theta reaches mic 1 (further along the axis) one sample earlier
    theta = math.degrees(math.asin(c / (fs * spacing)))
    s = torch.randn(fs, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = torch.stack([s, torch.roll(s, -1)])
    X = stft(x, n_fft=512, hop_length=128)
    freqs = torch.arange(257, dtype=torch.float64) * fs / 512
    positions = torch.tensor([0.0, spacing], dtype=torch.float64)

    def null_row(angle):  # w = [a_1, -a_0]: w . a(angle) = 0
        a = plot.linear_array_steering(
            positions, freqs, torch.tensor([angle], dtype=torch.float64), c
        )[..., 0]
        return torch.stack([a[:, 1], -a[:, 0]], -1)[:, None, :]  # (freq, 1, mics)

    R = plot.demixing_response(null_row(theta), positions, fs, angles_deg=[theta, -theta])
    # (at Nyquist the one-sample delay is a phase of pi from either side: no distinction)
    assert float(R[..., 0].max()) < 1e-12 and float(R[1:-1, :, 1].min()) > 1e-2
    for angle, suppressed in ((theta, True), (-theta, False)):
        Y = (null_row(angle) @ X.permute(1, 0, 2))[:, 0]  # (freq, frames)
        # (a delay is a phase factor in the STFT up to window-edge terms: about 5e-5 here)
        ratio = float(Y[:, 4:-4].abs().square().sum() / X[0, :, 4:-4].abs().square().sum())
        assert (ratio < 1e-3) if suppressed else (ratio > 0.1), (angle, ratio)


def test_demixing_response_is_batched_and_differentiable():
    W = torch.randn(3, 33, 2, 4, dtype=torch.complex128, requires_grad=True)
    R = plot.demixing_response(W, 0.04, 16000, angles_deg=torch.linspace(-60, 60, 7))
    assert R.shape == (3, 33, 2, 7)
    one = plot.demixing_response(W[1], 0.04, 16000, angles_deg=torch.linspace(-60, 60, 7))
    torch.testing.assert_close(R[1], one)
    R.sum().backward()
    assert torch.isfinite(W.grad).all() and W.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="mic_positions has 3 entries but W has 4 mics"):
        plot.demixing_response(W.detach(), [0.0, 0.1, 0.2], 16000)
    bad = W.detach().clone()
    bad[0, 0, 0, 0] = complex("nan")
    with pytest.raises(ValueError, match="W contains 1 NaN"):
        plot.demixing_response(bad, 0.04, 16000)


def test_beam_pattern_is_brightest_at_the_steering_angle(tmp_path):
    positions = torch.arange(8, dtype=torch.float64) * 0.02
    W = torch.cat([_delay_and_sum(129, positions, 30.0), _delay_and_sum(129, positions, -45.0)], 1)
    path = tmp_path / "beam.png"
    fig = plot.beam_pattern(W, positions, 16000, save=path)
    image = _png(path, fig)
    for ax, angle in zip(fig.axes[:2], (30.0, -45.0)):
        # above 4 kHz the main lobe is narrow: per row, the brightest pixels are at the angle
        r0, _, c0, c1 = _box(fig, ax, image)
        r1 = round(_pixel(ax, image, 0.0, 4000.0)[0])
        luma = _luma(image[r0:r1, c0:c1])
        peaks = [np.flatnonzero(row == row.max()).mean() for row in luma]
        expected = _pixel(ax, image, angle, 4000.0)[1] - c0
        px_per_degree = (c1 - c0) / 181
        assert abs(np.median(peaks) - expected) <= 1.5 * px_per_degree
    marked = plot.beam_pattern(W, positions, 16000, rows=[1], mark_angles_deg=[-45.0, 10.0])
    assert [line.get_xdata()[0] for line in marked.axes[0].get_lines()] == [-45.0, 10.0]
    with pytest.raises(ValueError, match="rows must be indices"):
        plot.beam_pattern(W, positions, 16000, rows=[2])


# --------------------------------------------------------------------------------------------
# benchmark summaries
# --------------------------------------------------------------------------------------------


def _results():
    g = torch.Generator().manual_seed(0)
    return {
        "good": {
            "si_sdr_improvement": 10 + 0.3 * torch.randn(12, generator=g),
            "real_time_factor": torch.full((12,), 0.02),
        },
        "poor": {
            "si_sdr_improvement": 0.3 * torch.randn(12, generator=g),
            "real_time_factor": torch.full((12,), 0.5),
        },
    }


@pytest.mark.parametrize("kind", ["box", "mean_std"])
def test_benchmark_summary_places_each_method_at_its_values(tmp_path, kind):
    results = _results()
    path = tmp_path / f"{kind}.png"
    fig = plot.benchmark_summary(results, kind=kind, save=path)
    image = _png(path, fig)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "SI-SDR improvement (dB)"
    r0, r1, c0, c1 = _box(fig, ax, image)
    for pos, name in ((1, "good"), (2, "poor")):
        _, col = _pixel(ax, image, pos - 0.2, 0.0)  # off centre: no whisker, mean marker
        # the box (alpha-blended face) or bar of this method: saturated pixels in its column
        column = image[r0:r1, round(col)]
        saturated = np.flatnonzero(column.max(-1) - column.min(-1) > 0.15)
        top, _ = _pixel(ax, image, pos, float(results[name]["si_sdr_improvement"].max()))
        assert saturated.size and saturated.min() + r0 >= top - 3, name
        level, _ = _pixel(ax, image, pos, float(results[name]["si_sdr_improvement"].mean()))
        if kind == "box":  # the box straddles the mean
            assert saturated.min() + r0 - 3 <= level <= saturated.max() + r0 + 3, name
        else:  # the bar's top is the mean
            assert abs(saturated.min() + r0 - level) <= 3, name


def test_records_and_mapping_give_the_same_results():
    records = [
        {"method": "AuxIVA", "file": "a", "sdr": 4.0, "real_time_factor": 0.1},
        {"method": "AuxIVA", "file": "b", "sdr": 6.0, "real_time_factor": 0.3},
        {"method": "ILRMA", "file": "a", "sdr": 8.0, "real_time_factor": 0.4},
    ]
    data = plot.collect_results(records)
    assert list(data) == ["AuxIVA", "ILRMA"]
    np.testing.assert_allclose(data["AuxIVA"]["sdr"], [4.0, 6.0])
    assert "file" not in data["AuxIVA"]
    with pytest.raises(
        ValueError, match=r"unknown metric 'si_sdr'; the results have \['real_time_factor', 'sdr'\]"
    ):
        plot.benchmark_summary(records, metrics=["si_sdr"])
    with pytest.raises(ValueError, match=r"results\['x'\]\['sdr'\] contains 1 NaN"):
        plot.benchmark_summary({"x": {"sdr": [1.0, float("nan")]}})
    with pytest.raises(ValueError, match=r"results\[1\]\['sdr'\] \(method 'm'\) is nan"):
        plot.collect_results([{"method": "m", "sdr": 1.0}, {"method": "m", "sdr": float("nan")}])
    with pytest.raises(ValueError, match="unknown kind"):
        plot.benchmark_summary(records, kind="violin")


def test_quality_vs_speed_puts_each_method_at_its_means(tmp_path):
    results = _results()
    path = tmp_path / "scatter.png"
    fig = plot.quality_vs_speed(results, save=path)
    image = _png(path, fig)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    for colour, name in (("C0", "good"), ("C1", "poor")):
        rows, cols = np.nonzero(_colour_mask(image, colour, tol=0.05))
        row, col = _pixel(
            ax,
            image,
            float(results[name]["real_time_factor"].mean()),
            float(results[name]["si_sdr_improvement"].mean()),
        )
        near = (np.abs(rows - row) < 8) & (np.abs(cols - col) < 8)
        assert near.sum() > 40, name  # the marker (8 pt) is there
    with pytest.raises(ValueError, match=r"method 'a' lacks \['real_time_factor'\]"):
        plot.quality_vs_speed({"a": {"si_sdr_improvement": [1.0]}, "b": results["good"]})


# --------------------------------------------------------------------------------------------
# files and the optional dependency
# --------------------------------------------------------------------------------------------


def test_save_writes_atomically_and_only_png(tmp_path):
    fig = plot.convergence({"a": torch.arange(5.0)}, figsize=(3, 2), dpi=50)
    out = tmp_path / "sub" / "c.png"
    assert plot.convergence({"a": torch.arange(5.0)}, figsize=(3, 2), dpi=50, save=out)
    assert imread(out).shape[:2] == (100, 150)
    assert sorted(p.name for p in out.parent.iterdir()) == ["c.png"]  # no temporary file left
    with pytest.raises(ValueError, match="must be a .png path"):
        plot.convergence({"a": torch.arange(5.0)}, save=tmp_path / "c.pdf")
    assert fig is not None


def test_torchbss_imports_and_computes_without_matplotlib():
    code = (
        "import sys, torch, torchbss, torchbss.plot as p, torchbss.report\n"
        "assert 'matplotlib' not in sys.modules, 'importing torchbss imported matplotlib'\n"
        "sys.modules['matplotlib'] = None  # as if it were not installed\n"
        "R = p.demixing_response(torch.ones(3, 1, 2, dtype=torch.complex64), 0.05, 16000)\n"
        "assert R.shape == (3, 1, 181)\n"
        "try:\n"
        "    p.convergence({'a': torch.ones(3)})\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install 'torchbss[plot]'" in out.stdout


def test_plot_arguments_that_were_changed_or_failed_inside_matplotlib_are_refused():
    """Unevenly spaced beam angles were drawn at even positions, a fractional row index was
    truncated, dpi 0 drew a 0 x 0 figure and dpi 1e6 tried a 8e6-pixel one, an empty metric
    list failed in matplotlib's gridspec."""
    positions = torch.arange(2, dtype=torch.float64) * 0.05
    W = torch.eye(2, dtype=torch.complex128).expand(33, 2, 2)
    with pytest.raises(ValueError, match="evenly spaced"):
        plot.beam_pattern(W, positions, 16000, angles_deg=[-90.0, 0.0, 10.0, 90.0])
    with pytest.raises(ValueError, match="rows must be indices"):
        plot.beam_pattern(W, positions, 16000, rows=[0.7])
    x = torch.randn(2, 4000)
    for dpi in (0, 1e6):
        with pytest.raises(ValueError, match="dpi"):
            plot.spectrogram_grid(x[:1], sample_rate=16000, dpi=dpi)
    with pytest.raises(ValueError, match="at least one metric"):
        plot.benchmark_summary({"a": {"si_sdr": [1.0, 2.0]}}, metrics=[])
