"""Separation quality of AuxIVA / ILRMA on the shared speech mixtures vs pyroomacoustics figures.

Run ``python -m bench.bench_quality [--quick]``. Prints a markdown table (method x set:
mean SI-SDRi, SDRi, time) and writes ``bench/results/bench_quality.json``. SI-SDR with the
permutation maximising the mean; SDRi is plain (not scale-invariant) SDR improvement.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import soundfile as sf
import torch

from bench._common import machine_info, print_table, write_json
from torchbss.separators import ILRMA, AuxIVA

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
N_FFT, HOP = 2048, 512


def _stft(x):
    win = torch.hann_window(N_FFT, periodic=True, dtype=x.dtype)
    return torch.stft(x, N_FFT, HOP, window=win, return_complex=True)


def _istft(X, n):
    win = torch.hann_window(N_FFT, periodic=True, dtype=X.real.dtype)
    return torch.istft(X, N_FFT, HOP, window=win, length=n)


def _sdr(ref, est, scale_invariant=True):
    if scale_invariant:
        ref = (est * ref).sum(-1, keepdim=True) / (ref * ref).sum(-1, keepdim=True) * ref
    return 10 * torch.log10(ref.pow(2).sum(-1) / (ref - est).pow(2).sum(-1))


def _best(ref, est, scale_invariant=True):
    return max(
        (_sdr(ref, est[list(p)], scale_invariant) for p in itertools.permutations(range(len(ref)))),
        key=lambda s: float(s.mean()),
    )


def methods():
    out = {}
    for upd in ("ip1", "ip2", "iss"):
        for model in ("laplace", "gauss"):
            out[f"auxiva_{upd}_{model}"] = (
                AuxIVA(n_iter=50, update=upd, source_model=model),
                "auxiva_laplace" if (upd, model) == ("ip1", "laplace") else None,
            )
    out["ilrma_2bases"] = (ILRMA(n_iter=100, n_basis=2), "ilrma_2bases")
    out["ilrma_10bases"] = (ILRMA(n_iter=100, n_basis=10), "ilrma_10bases")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2x2_00 only, 3 methods")
    args = parser.parse_args()
    figures = json.loads((DATA / "reference_figures.json").read_text())["sets"]["mixtures"]
    if args.quick:
        figures = figures[:1]
    all_methods = methods()
    if args.quick:
        all_methods = {
            k: all_methods[k] for k in ("auxiva_ip1_laplace", "auxiva_iss_laplace", "ilrma_2bases")
        }
    rows = []
    for name, (sep, ref_key) in all_methods.items():
        si, sd, secs, theirs = [], [], [], []
        for entry in figures:
            mix, _ = sf.read(DATA / "mixtures" / f"{entry['name']}_mix.flac", always_2d=True)
            ref, _ = sf.read(DATA / "mixtures" / f"{entry['name']}_ref.flac", always_2d=True)
            mix = torch.from_numpy(mix.T.copy())
            ref = torch.from_numpy(ref.T.copy())
            X = _stft(mix).to(torch.complex64)
            t0 = time.perf_counter()
            Y = sep(X)
            secs.append(time.perf_counter() - t0)
            est = _istft(Y, mix.shape[-1]).double()
            base = mix[:1].expand_as(ref)
            si.append(float((_best(ref, est) - _sdr(ref, base)).mean()))
            sd.append(float((_best(ref, est, False) - _sdr(ref, base, False)).mean()))
            if ref_key:
                theirs.append(entry[ref_key]["mean_si_sdri_db"])
        mean = lambda v: sum(v) / len(v)  # noqa: E731
        rows.append(
            {
                "method": name,
                "set": "mixtures" if not args.quick else "2x2_00",
                "si_sdri_db": round(mean(si), 2),
                "sdri_db": round(mean(sd), 2),
                "pyroomacoustics_si_sdri_db": round(mean(theirs), 2) if theirs else "-",
                "time_s": round(mean(secs), 3),
                "per_mixture_si_sdri_db": [round(v, 2) for v in si],
            }
        )
    print_table(rows, columns=[c for c in rows[0] if c != "per_mixture_si_sdri_db"])
    write_json("bench_quality", {"machine": machine_info(), "quick": args.quick, "rows": rows})


if __name__ == "__main__":
    main()
