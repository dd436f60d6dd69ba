"""torchbss.report: a self-contained listening report (links resolve, audio round-trips, names
are escaped), its refusals, and a real browser rendering it (slow)."""

from __future__ import annotations

import math
import os
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("soundfile")
pytest.importorskip("matplotlib")

from torchbss.io import load  # noqa: E402
from torchbss.report import MARKER, ReportExample, find_chromium, screenshot, write_report  # noqa: E402

FS = 8000


class _Page(HTMLParser):
    """Collects tags with their attributes, and the text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(index: Path) -> _Page:
    page = _Page()
    page.feed(index.read_text(encoding="utf-8"))
    return page


def _tone(freq, amp=0.3, seconds=1.5):
    t = torch.arange(round(seconds * FS), dtype=torch.float64) / FS
    return amp * torch.sin(2 * math.pi * freq * t)


def _example(name="ex", gain=1.0, with_refs=True):
    refs = torch.stack([_tone(440.0), _tone(1500.0)])
    mix = torch.stack([refs.sum(0), 0.8 * refs.sum(0)]) * gain
    est = refs + 0.01 * torch.randn(refs.shape, generator=torch.Generator().manual_seed(0))
    return ReportExample(
        name,
        mix,
        estimates=est * gain,
        references=refs * gain if with_refs else None,
        metrics={"SI-SDR": torch.tensor([20.5, 19.25]), "time (s)": 0.125},
        source_names=["low", "high"],
    )


def test_report_is_self_contained_and_plays_every_signal(tmp_path):
    examples = [_example("first"), _example("second", with_refs=False)]
    index = write_report(tmp_path / "report", examples, sample_rate=FS, title="My report")
    root = index.parent
    assert index == tmp_path / "report" / "index.html" and (root / MARKER).is_file()
    page = _parse(index)
    links = [a.get("src") or a.get("href") for _, a in page.tags if a.get("src") or a.get("href")]
    local = [link for link in links if not link.startswith("#")]
    assert local, "no links"
    for link in local:
        assert "://" not in link and not link.startswith("/"), link  # relative, no network
        assert (root / link).is_file(), link
    assert not [t for t, a in page.tags if t in ("script", "link", "iframe")]  # no external CSS/JS
    audio = [a["src"] for t, a in page.tags if t == "audio"]
    # first: mixture + 2 references + 2 estimates; second: mixture + 2 estimates
    assert len(audio) == 8 and all(a.endswith(".wav") for a in audio)
    images = [a["src"] for t, a in page.tags if t == "img"]
    assert sum("spectrograms" in i for i in images) == 2
    assert sum("si_sdr" in i for i in images) == 1  # framewise SI-SDR needs references
    # the audio round-trips (16-bit PCM)
    first = examples[0]
    ref0, fs = load(root / "audio" / "00_first" / "reference_0.wav", dtype=torch.float64)
    assert fs == FS and ref0.shape == (1, first.references.shape[-1])
    torch.testing.assert_close(ref0[0], first.references[0], atol=1e-4, rtol=0)
    mixture, _ = load(root / "audio" / "00_first" / "mixture.wav", dtype=torch.float64)
    torch.testing.assert_close(mixture[0], first.mixture[0], atol=1e-4, rtol=0)
    all_mics, _ = load(root / "audio" / "00_first" / "mixture_all_mics.wav")
    assert all_mics.shape[0] == 2
    # metrics: per source in the example table, means in the summary table
    text = " ".join(page.text)
    assert "20.50" in text and "19.25" in text and "19.88" in text  # mean of 20.5 and 19.25
    assert "My report" in text and "low" in text


def test_report_escapes_names_and_keeps_file_names_safe(tmp_path):
    name = '<script>alert("x")</script> & co/../..'
    index = write_report(tmp_path / "r", [_example(name)], sample_rate=FS, plots=False)
    html = index.read_text(encoding="utf-8")
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co/../.." in html
    files = [p for p in index.parent.rglob("*") if p.is_file()]
    assert all(index.parent in p.parents for p in files)
    assert all(
        set(p.name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        for p in files
    )
    assert not [t for t, _ in _parse(index).tags if t == "img"]  # plots=False


def test_clipping_example_is_scaled_once_and_says_so(tmp_path):
    example = _example("loud", gain=5.0)  # peaks around 3.5
    index = write_report(tmp_path / "r", [example], sample_rate=FS, plots=False)
    est, _ = load(index.parent / "audio" / "00_loud" / "estimate_1.wav", dtype=torch.float64)
    ref, _ = load(index.parent / "audio" / "00_loud" / "reference_1.wav", dtype=torch.float64)
    peak = max(float(t.abs().max()) for t in (example.mixture, example.estimates))
    gain = 0.99 / peak
    torch.testing.assert_close(est[0], gain * example.estimates[1], atol=1e-4, rtol=0)
    torch.testing.assert_close(ref[0], gain * example.references[1], atol=1e-4, rtol=0)
    assert f"scaled by {20 * math.log10(gain):.1f} dB" in index.read_text(encoding="utf-8")


def test_summary_rows_and_extra_figures(tmp_path):
    from torchbss.plot import convergence

    png = tmp_path / "given.png"
    convergence({"a": torch.arange(5.0)}, save=png)
    rows = [
        {"method": "AuxIVA", "SI-SDRi": 4.5, "files": 9},
        {"method": "ILRMA <2 bases>", "SI-SDRi": float("nan")},
    ]
    figures = {"cost": convergence({"b": torch.arange(4.0)}), "from a file": png}
    index = write_report(
        tmp_path / "r",
        [_example()],
        sample_rate=FS,
        summary_rows=rows,
        figures=figures,
        plots=False,
    )
    html = index.read_text(encoding="utf-8")
    assert "ILRMA &lt;2 bases&gt;" in html and "n/a" in html and ">4.50<" in html and ">9<" in html
    images = [a["src"] for t, a in _parse(index).tags if t == "img"]
    assert images == ["figures/00_cost.png", "figures/01_given.png"]
    assert (index.parent / images[1]).read_bytes() == png.read_bytes()


def test_bad_input_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="no examples"):
        write_report(tmp_path / "r", [], sample_rate=FS)
    assert not (tmp_path / "r").exists()
    with pytest.raises(TypeError, match=r"examples\[0\] must be a torchbss.report.ReportExample"):
        write_report(tmp_path / "r", [{"name": "x"}], sample_rate=FS)
    with pytest.raises(ValueError, match="must be an existing image file"):
        write_report(tmp_path / "r", [_example()], sample_rate=FS, figures={"x": "nope.png"})
    with pytest.raises(ValueError, match="sample_rate must be an integer >= 1"):
        write_report(tmp_path / "r", [_example()], sample_rate=0)
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary folder left


def test_report_example_checks_its_fields():
    mix, est = torch.randn(2, 800), torch.randn(2, 800)
    bad = est.clone()
    bad[1, 5] = float("nan")
    with pytest.raises(ValueError, match="example 'a': estimates contains 1 NaN"):
        ReportExample("a", mix, estimates=bad)
    with pytest.raises(ValueError, match="references and estimates must have the same shape"):
        ReportExample("a", mix, estimates=est, references=torch.randn(3, 800))
    with pytest.raises(ValueError, match="same number of samples"):
        ReportExample("a", mix, estimates=torch.randn(2, 700))
    with pytest.raises(ValueError, match=r"metrics\['sdr'\] must be a number or 2 numbers"):
        ReportExample("a", mix, estimates=est, metrics={"sdr": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="ref_mic must be an integer in"):
        ReportExample("a", mix, estimates=est, ref_mic=2)
    with pytest.raises(TypeError, match="must be a floating point tensor"):
        ReportExample("a", mix, estimates=torch.ones(2, 800, dtype=torch.int16))
    example = ReportExample("a", mix[0], estimates=est, metrics={"x": np.float32(2.5)})
    assert example.mixture.shape == (1, 800) and example.metrics == {"x": 2.5}


def test_existing_folders_need_overwrite_and_only_reports_are_replaced(tmp_path):
    out = tmp_path / "r"
    write_report(out, [_example("old")], sample_rate=FS, plots=False)
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        write_report(out, [_example("new")], sample_rate=FS, plots=False)
    write_report(out, [_example("new")], sample_rate=FS, plots=False, overwrite=True)
    assert sorted(p.name for p in (out / "audio").iterdir()) == ["00_new"]  # old files gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no temporary folders left
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a torchbss report"):
        write_report(other, [_example()], sample_rate=FS, plots=False, overwrite=True)
    assert (other / "notes.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_report(empty, [_example()], sample_rate=FS, plots=False).is_file()


def test_a_failure_half_way_leaves_nothing_behind(tmp_path, monkeypatch):
    import torchbss.report.writer as writer

    calls = []

    def failing_save(path, audio, sample_rate):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(b"")

    monkeypatch.setattr(writer, "_save_audio", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_report(tmp_path / "r", [_example()], sample_rate=FS, plots=False)
    assert list(tmp_path.iterdir()) == []


def test_report_files_are_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        index = write_report(tmp_path / "r", [_example()], sample_rate=FS, plots=False)
    finally:
        os.umask(old)
    for path in [index.parent, *index.parent.rglob("*")]:
        assert path.stat().st_mode & 0o004, path  # world-readable, as the umask allows


@pytest.mark.slow
@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed")
def test_chromium_renders_the_report(tmp_path):
    from matplotlib.image import imread

    index = write_report(tmp_path / "r", [_example("rendered")], sample_rate=FS, title="Rendered")
    png = screenshot(index, tmp_path / "shot.png", window_size=(1000, 1400))
    image = imread(png)[..., :3]
    assert image.shape[:2] == (1400, 1000)
    assert image.std() > 0.05  # not blank
    # the spectrogram figure (dark magma pixels) is on the page, not a broken image
    dark_purple = (image[..., 2] > image[..., 1] + 0.1) & (image.sum(-1) < 1.2)
    assert dark_purple.mean() > 0.01
