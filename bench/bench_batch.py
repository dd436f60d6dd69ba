"""Speed of batch AuxIVA-IP1 (50 it) and ILRMA (100 it) vs pyroomacoustics, torchiva and ssspy.

Run ``python -m bench.bench_batch [--quick]``: the shared speech mixtures, STFT periodic Hann
2048 / hop 512, float32 / complex64, with 1 thread and with the default threads; then the
throughput of one batched call on 16 and 64 mixtures vs one call per mixture, and the
activation memory saved by per-iteration checkpointing. Writes ``bench/results/bench_batch.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from bench._common import machine_info, print_table, time_fn, write_json
from torchbss.separators import ILRMA, AuxIVA

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mixtures"
N_FFT, HOP = 2048, 512


def _load(name: str) -> torch.Tensor:
    mix, _ = sf.read(DATA / f"{name}_mix.flac", always_2d=True, dtype="float32")
    x = torch.from_numpy(mix.T.copy())
    win = torch.hann_window(N_FFT, periodic=True)
    return torch.stft(x, N_FFT, HOP, window=win, return_complex=True)  # (mics, freq, frames)


def _torchiva():
    """Import torchiva with a stub torchaudio (it imports torchaudio at import time)."""
    if "torchaudio" not in sys.modules:
        stub = types.ModuleType("torchaudio")
        stub.transforms = types.SimpleNamespace(MelScale=object)
        sys.modules["torchaudio"] = stub
        sys.modules["torchaudio.transforms"] = stub.transforms
    try:
        import torchiva

        return torchiva
    except Exception as exc:  # pragma: no cover - optional peer
        print(f"torchiva unavailable: {exc}")
        return None


def _peers(n_iter_iva: int, n_iter_ilrma: int):
    peers = {}
    try:
        import pyroomacoustics as pra

        peers["pyroomacoustics"] = {
            "auxiva": lambda X: pra.bss.auxiva(X.permute(2, 1, 0).numpy(), n_iter=n_iter_iva),
            "ilrma": lambda X: pra.bss.ilrma(
                X.permute(2, 1, 0).numpy(), n_iter=n_iter_ilrma, n_components=2
            ),
        }
    except ImportError:
        pass
    tiva = _torchiva()
    if tiva is not None:
        sep = tiva.AuxIVA_IP(n_iter=n_iter_iva)
        peers["torchiva"] = {"auxiva": lambda X: sep(X)}
    try:
        from ssspy.bss.ilrma import GaussILRMA
        from ssspy.bss.iva import AuxLaplaceIVA

        def ssspy_iva(X):
            return AuxLaplaceIVA()(X.numpy(), n_iter=n_iter_iva)

        def ssspy_ilrma(X):
            return GaussILRMA(n_basis=2, rng=np.random.default_rng(0))(
                X.numpy(), n_iter=n_iter_ilrma
            )

        peers["ssspy"] = {"auxiva": ssspy_iva, "ilrma": ssspy_ilrma}
    except ImportError:
        pass
    return peers


def _speed_rows(names, n_iter_iva, n_iter_ilrma, repeat, threads_label):
    Xs = [_load(n) for n in names]
    ours = {
        "auxiva": AuxIVA(n_iter=n_iter_iva),
        "ilrma": ILRMA(n_iter=n_iter_ilrma, n_basis=2),
    }
    rows = []
    peers = _peers(n_iter_iva, n_iter_ilrma)
    for algo, sep in ours.items():
        with torch.no_grad():
            t_ours = sum(time_fn(lambda X=X, sep=sep: sep(X), repeat=repeat, warmup=0) for X in Xs)
        row = {"threads": threads_label, "algorithm": algo, "torchbss_s": round(t_ours, 3)}
        for peer, fns in peers.items():
            if algo not in fns:
                continue
            try:
                with torch.no_grad():
                    t = sum(
                        time_fn(lambda X=X, f=fns[algo]: f(X), repeat=repeat, warmup=0) for X in Xs
                    )
                row[f"{peer}_s"] = round(t, 3)
                row[f"speedup_vs_{peer}"] = round(t / t_ours, 2)
            except Exception as exc:  # a peer failing must not stop the benchmark
                row[f"{peer}_s"] = f"error: {type(exc).__name__}"
        rows.append(row)
    return rows


def _batch_rows(sizes, n_iter, repeat):
    X = _load("2x2_00")
    rows = []
    sep = AuxIVA(n_iter=n_iter)
    for n in sizes:
        batch = X.expand(n, *X.shape).clone()
        with torch.no_grad():
            t_batch = time_fn(lambda batch=batch: sep(batch), repeat=repeat, warmup=0)
            t_loop = time_fn(lambda batch=batch: [sep(b) for b in batch], repeat=repeat, warmup=0)
        rows.append(
            {
                "batch": n,
                "batched_s": round(t_batch, 3),
                "one_by_one_s": round(t_loop, 3),
                "mixtures_per_s": round(n / t_batch, 2),
                "speedup": round(t_loop / t_batch, 2),
            }
        )
    return rows


def _checkpoint_memory(n_iter):
    """Peak saved-activation bytes of backward with and without per-iteration checkpointing."""
    X = _load("2x2_00")[:, :257]

    def run(ckpt):
        saved = 0
        live = []

        def pack(t):
            nonlocal saved
            live.append(t.numel() * t.element_size())
            saved = max(saved, sum(live))
            return t

        Xg = X.clone().requires_grad_(True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            Y = AuxIVA(n_iter=n_iter, checkpoint=ckpt)(Xg)
        Y.abs().pow(2).sum().backward()
        return saved

    full, ckpt = run(False), run(True)
    return {
        "n_iter": n_iter,
        "saved_bytes": full,
        "saved_bytes_checkpoint": ckpt,
        "saving": round(full / max(ckpt, 1), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one mixture, few iterations")
    args = parser.parse_args()
    if args.quick:
        names, it_iva, it_ilrma, repeat, sizes = ["2x2_00"], 5, 5, 1, [4]
    else:
        names = ["2x2_00", "2x2_01", "2x2_02", "2x2_03", "3x3_00", "3x3_01", "3x3_02"]
        it_iva, it_ilrma, repeat, sizes = 50, 100, 3, [16, 64]
    default_threads = torch.get_num_threads()
    rows = []
    for threads in (1, default_threads):
        torch.set_num_threads(threads)
        rows += _speed_rows(names, it_iva, it_ilrma, repeat, str(threads))
    torch.set_num_threads(default_threads)
    print_table(
        rows,
        columns=sorted(
            {k for r in rows for k in r}, key=lambda k: (k != "threads", k != "algorithm", k)
        ),
    )
    batch_rows = _batch_rows(sizes, it_iva, 1)
    print_table(batch_rows)
    mem = _checkpoint_memory(10 if args.quick else 50)
    print(
        f"checkpointing: saved activations {mem['saved_bytes'] / 1e6:.1f} MB -> "
        f"{mem['saved_bytes_checkpoint'] / 1e6:.1f} MB ({mem['saving']}x less)"
    )
    write_json(
        "bench_batch",
        {
            "machine": machine_info(),
            "quick": args.quick,
            "mixtures": names,
            "speed": rows,
            "batch": batch_rows,
            "checkpoint_memory": mem,
            "default_threads": default_threads,
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )


if __name__ == "__main__":
    main()
