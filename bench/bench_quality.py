"""Separation quality of AuxIVA / ILRMA on the shared mixtures vs the pyroomacoustics figures.

Run ``python -m bench.bench_quality [--quick]``. Every method gets the STFT of
``reference_figures.json`` (scipy ``ShortTimeFFT``: periodic Hann 2048, hop 512, one-sided,
default framing, i.e. 253 frames for 8 s where ``torch.stft`` gives 251) in complex64, and the
same ``ShortTimeFFT`` inverts it. Prints a markdown table (method x set: mean SI-SDRi, SDRi,
time per mixture, the reference figure) and writes ``bench/results/bench_quality.json``.

Methods: AuxIVA (50 it) ip1/ip2/iss x laplace/gauss (compared with the pyroomacoustics 50-it
figure for Laplace) and the default AuxIVA (ip2, gauss, 100 it); AuxIVA ip2 laplace / gauss at
20 it next to the shipped ``neural-auxiva`` (AuxIVA-IP2, 20 it, learned source model, trained on
STFT 2048/512); ILRMA (100 it) with 2 and 10 bases in the default configuration (ip2), with 2
bases warm started from 10 AuxIVA iterations, and with IP1 from the identity and the NMF factors
pyroomacoustics draws after ``np.random.seed(0)`` ("ip1, pyroomacoustics factors"; its
normalisation differs from pyroomacoustics', which scales the columns of ``W``; run in
complex128, since IP1 without loading turns NaN in complex64).
SI-SDR with the permutation maximising the mean; SDRi is the plain SDR improvement.

It also times the default ILRMA (ip2, 2 bases, 100 it, 2x2_00, complex64, one thread) against
pyroomacoustics' ILRMA (IP1) in the same run and reports the speed ratio (skipped when
pyroomacoustics is not installed).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from bench._common import machine_info, print_table, write_json
from torchbss.separators import ILRMA, AuxIVA, IterativeState
from torchbss.source_models import NMFState
from torchbss.updates import IP1

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
N_FFT, HOP, FS = 2048, 512, 16000
SETS = ("mixtures", "music_multichannel")


def _sft():
    from scipy.signal import ShortTimeFFT
    from scipy.signal.windows import hann

    return ShortTimeFFT(hann(N_FFT, sym=False), HOP, FS, fft_mode="onesided")


def _sdr(ref, est, scale_invariant=True):
    if scale_invariant:
        ref = (est * ref).sum(-1, keepdims=True) / (ref * ref).sum(-1, keepdims=True) * ref
    return 10 * np.log10((ref**2).sum(-1) / ((ref - est) ** 2).sum(-1))


def _best(ref, est, scale_invariant=True):
    return max(
        (_sdr(ref, est[list(p)], scale_invariant) for p in itertools.permutations(range(len(ref)))),
        key=lambda s: float(s.mean()),
    )


def _pra_factors(n_src: int, n_freq: int, n_frames: int, n_basis: int) -> NMFState:
    """The initial NMF factors of ``pra.bss.ilrma`` after ``np.random.seed(0)``."""
    rng = np.random.RandomState(0)  # same stream as np.random.seed(0)
    basis = 0.1 + 0.9 * rng.rand(n_src, n_freq, n_basis)
    act = 0.1 + 0.9 * rng.rand(n_src, n_frames, n_basis)
    return NMFState(torch.from_numpy(basis), torch.from_numpy(act).transpose(-1, -2))


def _pra_equivalent(k: int, n_basis: int):
    """ILRMA with IP1 (no loading) from the identity and pyroomacoustics' initial NMF factors.

    Computed in complex128 (sources returned in the input's dtype): with ``load=0`` in complex64
    the run becomes NaN on 2x2_00 after ~64 iterations.
    """
    sep = ILRMA(n_iter=100, n_basis=n_basis, n_src=k, update=IP1(load=0.0))

    def run(X: torch.Tensor):
        X64 = X.to(torch.complex128)
        n_freq, n_frames = X.shape[-2:]
        eye = sep.init_state(X64).demixing  # identity of the working mixture (PCA: k x k)
        res = sep(X64, IterativeState(eye, _pra_factors(k, n_freq, n_frames, n_basis)))
        return dataclasses.replace(res, sources=res.sources.to(X.dtype))

    return run


def _warm_started(k: int, n_basis: int, warm_iter: int = 10):
    """ILRMA (default) started from the demixing of ``warm_iter`` default AuxIVA iterations."""
    warm, sep = AuxIVA(n_iter=warm_iter, n_src=k), ILRMA(n_iter=100, n_basis=n_basis, n_src=k)

    def run(X: torch.Tensor):
        return sep(X, sep.init_state(X, demixing=warm(X).state.demixing))

    return run


def _neural_auxiva(k: int):
    """The shipped ``neural-auxiva`` (AuxIVA-IP2, 20 it, learned source model)."""
    from torchbss.export import pretrained

    return pretrained("neural-auxiva", n_src=k).eval()


def methods() -> dict:
    """name -> (factory(n_src) -> callable ``X -> SeparationResult``, reference key or None)."""
    out = {}
    for upd in ("ip1", "ip2", "iss"):
        for model in ("laplace", "gauss"):
            out[f"auxiva_{upd}_{model}_50it"] = (
                lambda k, u=upd, m=model: AuxIVA(n_iter=50, update=u, source_model=m, n_src=k),
                "auxiva_laplace" if model == "laplace" else None,
            )
    out["auxiva_ip2_gauss_100it (default)"] = (lambda k: AuxIVA(n_src=k), None)
    for model in ("laplace", "gauss"):
        out[f"auxiva_ip2_{model}_20it"] = (
            lambda k, m=model: AuxIVA(n_iter=20, update="ip2", source_model=m, n_src=k),
            None,
        )
    out["neural-auxiva (shipped, 20 it)"] = (_neural_auxiva, None)
    for nb in (2, 10):
        default = " (default)" if nb == 2 else " (ip2)"
        out[f"ilrma_{nb}bases{default}"] = (
            lambda k, b=nb: ILRMA(n_iter=100, n_basis=b, n_src=k),
            f"ilrma_{nb}bases",
        )
        if nb == 2:
            out["ilrma_2bases_warm_auxiva10"] = (
                lambda k: _warm_started(k, 2),
                "ilrma_2bases",
            )
        out[f"ilrma_{nb}bases_ip1_pyroomacoustics_factors_c128"] = (
            lambda k, b=nb: _pra_equivalent(k, b),
            f"ilrma_{nb}bases",
        )
    return out


def _load(folder: str, name: str):
    mix, _ = sf.read(DATA / folder / f"{name}_mix.flac", always_2d=True)
    ref, _ = sf.read(DATA / folder / f"{name}_ref.flac", always_2d=True)
    return mix.T.copy(), ref.T.copy()


def ilrma_speed(repeat: int = 3) -> dict | None:
    """Seconds of ILRMA (2 bases, 100 it, 2x2_00, complex64) for torchbss and pyroomacoustics."""
    try:
        import pyroomacoustics as pra
    except ImportError:
        return None
    mix, _ = _load("mixtures", "2x2_00")
    Xn = _sft().stft(mix).astype(np.complex64)
    X = torch.from_numpy(Xn)
    sep = ILRMA(n_iter=100, n_basis=2, track_cost=False)
    Xp = Xn.transpose(2, 1, 0).copy()

    def run_pra():
        np.random.seed(0)  # noqa: NPY002 (pyroomacoustics draws from the global RNG)
        pra.bss.ilrma(Xp, n_iter=100, n_components=2, proj_back=True)

    timings = {}
    for name, fn in (
        ("torchbss", lambda: sep(X)),
        ("pyroomacoustics", run_pra),
    ):
        fn()
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        timings[name] = min(times)
    timings["speedup"] = timings["pyroomacoustics"] / timings["torchbss"]
    return {k: round(v, 3) for k, v in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2x2_00 only, 6 methods")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    figures = json.loads((DATA / "reference_figures.json").read_text())["sets"]
    sets = {s: figures[s] for s in SETS}
    all_methods = methods()
    if args.quick:
        sets = {"mixtures": figures["mixtures"][:1]}
        keep = (
            "auxiva_ip1_laplace_50it",
            "auxiva_ip2_gauss_100it (default)",
            "auxiva_ip2_laplace_20it",
            "neural-auxiva (shipped, 20 it)",
            "ilrma_2bases (default)",
            "ilrma_2bases_ip1_pyroomacoustics_factors_c128",
        )
        all_methods = {k: all_methods[k] for k in keep}
    sft = _sft()
    rows = []
    for set_name, entries in sets.items():
        data = {e["name"]: _load(set_name, e["name"]) for e in entries}
        stfts = {n: torch.from_numpy(sft.stft(m)).to(torch.complex64) for n, (m, _) in data.items()}
        for name, (factory, ref_key) in all_methods.items():
            si, sd, secs, theirs = [], [], [], []
            for entry in entries:
                mix, ref = data[entry["name"]]
                X = stfts[entry["name"]]
                sep = factory(entry["n_src"])
                t0 = time.perf_counter()
                with torch.no_grad():
                    Y = sep(X).sources
                secs.append(time.perf_counter() - t0)
                est = sft.istft(Y.to(torch.complex128).numpy(), k1=mix.shape[-1])
                base = np.broadcast_to(mix[:1], ref.shape)
                si.append(float((_best(ref, est) - _sdr(ref, base)).mean()))
                sd.append(float((_best(ref, est, False) - _sdr(ref, base, False)).mean()))
                if ref_key:
                    theirs.append(entry[ref_key]["mean_si_sdri_db"])
            rows.append(
                {
                    "method": name,
                    "set": set_name if not args.quick else "2x2_00",
                    "si_sdri_db": round(float(np.mean(si)), 2),
                    "sdri_db": round(float(np.mean(sd)), 2),
                    "pyroomacoustics_si_sdri_db": round(float(np.mean(theirs)), 2)
                    if theirs
                    else "-",
                    "time_s": round(float(np.mean(secs)), 3),
                    "per_mixture_si_sdri_db": [round(v, 2) for v in si],
                }
            )
            print(rows[-1], flush=True)
    print_table(rows, columns=[c for c in rows[0] if c != "per_mixture_si_sdri_db"])
    speed = ilrma_speed(repeat=1 if args.quick else 3)
    if speed is not None:
        print("\nILRMA 2 bases, 100 it, 2x2_00, complex64, seconds (min of runs):")
        print_table([speed])
    write_json(
        "bench_quality",
        {
            "machine": machine_info(),
            "quick": args.quick,
            "stft": "scipy ShortTimeFFT, periodic hann 2048, hop 512, onesided (reference framing)",
            "rows": rows,
            "ilrma_speed": [speed] if speed is not None else None,
        },
    )


if __name__ == "__main__":
    main()
