"""Build a listening report of real separations and take its screenshot for the README.

Separates two of the shared speech mixtures (``2x2_00``, ``2x2_01``) with AuxIVA (IP2) and
ILRMA, writes ``out/report_demo/index.html`` (summary, convergence, beam patterns, players,
spectrograms) and saves a downscaled screenshot from headless Chromium to
``docs/report_screenshot.png``::

    .venv/bin/python scripts/screenshot_report.py [--data ../shared/data] [--out out/report_demo]

Needs matplotlib (``torchbss[plot]``), soundfile (``torchbss[io]``), pillow (comes with
matplotlib) and ``chromium`` on PATH (``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import torchbss
from torchbss.metrics import bss_eval_sdr, si_sdr, si_sdr_improvement
from torchbss.plot import beam_pattern, convergence
from torchbss.report import ReportExample, screenshot, write_report
from torchbss.signal.stft import istft, stft

ROOT = Path(__file__).resolve().parents[1]
N_FFT, HOP = 2048, 512


def separate(separator, mixture: torch.Tensor):
    """Adapter to the separator API: ``(mics, samples)`` -> estimates, W, cost per iteration."""
    X = stft(mixture, N_FFT, HOP)
    out = separator(X)
    if isinstance(out, torch.Tensor):  # older API: the result object needs return_state=True
        out = separator(X, return_state=True)
    Y = out.sources if hasattr(out, "sources") else out.Y
    W = getattr(out, "demixing", getattr(out, "W", None))
    cost = getattr(out, "cost", None)
    return istft(Y, N_FFT, HOP, length=mixture.shape[-1]), W, cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(ROOT / "out" / "report_demo"))
    parser.add_argument("--screenshot", default=str(ROOT / "docs" / "report_screenshot.png"))
    parser.add_argument("--width", type=int, default=720, help="width of the saved screenshot")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = Path(args.data) / "mixtures"
    manifest = {m["name"]: m for m in json.loads((data / "manifest.json").read_text())["mixtures"]}
    methods = {
        "AuxIVA (IP2, 50 it)": torchbss.AuxIVA(n_iter=50, update="ip2"),
        "ILRMA (2 bases, 50 it)": torchbss.ILRMA(n_iter=50, n_basis=2),
    }
    examples, rows, costs, figures = [], [], {}, {}
    for name in ("2x2_00", "2x2_01"):
        mix, fs = torchbss.io.load(data / f"{name}_mix.flac", dtype=torch.float64)
        ref, _ = torchbss.io.load(data / f"{name}_ref.flac", dtype=torch.float64)
        meta = manifest[name]
        for method, separator in methods.items():
            start = time.perf_counter()
            est, W, cost = separate(separator, mix)
            elapsed = time.perf_counter() - start
            perm = bss_eval_sdr(ref, est).permutation
            est = est[perm]
            metrics = {
                "SI-SDR (dB)": si_sdr(ref, est),
                "SI-SDRi (dB)": si_sdr_improvement(ref, est, mix),
            }
            label = f"{name} · {method}"
            examples.append(
                ReportExample(
                    label,
                    mix,
                    estimates=est,
                    references=ref,
                    metrics=metrics,
                    source_names=meta["sources"],
                )
            )
            rows.append(
                {
                    "mixture": name,
                    "method": method,
                    "SI-SDR (dB)": float(metrics["SI-SDR (dB)"].mean()),
                    "SI-SDRi (dB)": float(metrics["SI-SDRi (dB)"].mean()),
                    "real-time factor": elapsed / (mix.shape[-1] / fs),
                }
            )
            if name == "2x2_00":
                if cost is not None:
                    costs[method] = cost
                if W is not None and method.startswith("AuxIVA"):
                    spacing = meta["mic_spacing_m"]
                    figures["2x2_00, AuxIVA demixing beam patterns (dashed: true directions)"] = (
                        beam_pattern(
                            W[..., perm, :],
                            spacing,
                            fs,
                            source_names=[f"output for {s}" for s in meta["sources"]],
                            mark_angles_deg=meta["src_azimuth_deg"],
                        )
                    )
    if costs:
        figures = {
            "2x2_00: excess cost per iteration (negative log-likelihood)": convergence(
                costs, relative=True, ylabel="cost - lowest cost (per frame)"
            ),
            **figures,
        }
    index = write_report(
        args.out,
        examples,
        sample_rate=fs,
        summary_rows=rows,
        figures=figures,
        title="torchbss listening report: speech mixtures",
        description="Made by scripts/screenshot_report.py",
        overwrite=True,
    )
    print(f"report: {index}")
    full = Path(args.out).with_name("report_screenshot_full.png")
    screenshot(index, full, window_size=(1200, 2100))
    from PIL import Image

    with Image.open(full) as image:
        height = round(image.height * args.width / image.width)
        small = image.convert("RGB").resize((args.width, height), Image.LANCZOS)
        Path(args.screenshot).parent.mkdir(parents=True, exist_ok=True)
        # 256 colours, dithered: about 3x smaller than RGB and no banding in colour bars
        palette = small.quantize(colors=256, method=Image.Quantize.FASTOCTREE)
        small = small.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
        small.save(args.screenshot, optimize=True)
    print(f"screenshot: {args.screenshot} ({Path(args.screenshot).stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
