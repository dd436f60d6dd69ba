"""The ``torchbss`` command line: demo, separate, evaluate, benchmark, train.

Run ``torchbss <command> --help`` (or ``python -m torchbss.cli.main``) for the options.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

__all__ = ["main", "build_parser"]

METHODS = ("auxiva", "ilrma", "online-auxiva", "online-ilrma")


def _default_data_dir() -> Path | None:
    """``../shared/data`` next to the repository, when it exists (never needed by users)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / "data"
        if (candidate / "mixtures").is_dir():
            return candidate
    return None


def make_separator(
    method: str,
    *,
    n_src: int,
    n_freq: int,
    n_iter: int | None = None,
    ref_mic: int = 0,
    params: str | None = None,
) -> torch.nn.Module:
    """Build a separator module by name (one of :data:`METHODS`)."""
    from torchbss.separators import ILRMA, AuxIVA, OnlineAuxIVA, OnlineILRMA

    if method == "auxiva":
        return AuxIVA(
            n_iter=n_iter or 100,
            update="ip2" if n_src == 2 else "ip1",
            source_model="laplace",
            n_src=n_src,
            ref_mic=ref_mic,
        )
    if method == "ilrma":
        return ILRMA(n_iter=n_iter or 100, n_basis=2, n_src=n_src, ref_mic=ref_mic, seed=0)
    if method == "online-auxiva":
        return OnlineAuxIVA(n_src=n_src, ref_mic=ref_mic)
    if method == "online-ilrma":
        sep = OnlineILRMA(n_src=n_src, n_freq=n_freq, ref_mic=ref_mic)
        if params:
            from torchbss.training.online_ilrma import load_online_ilrma

            sep = load_online_ilrma(params, n_src=n_src, ref_mic=ref_mic)
        return sep
    raise ValueError(f"unknown method {method!r}; valid options are {list(METHODS)}")


def separate_waveform(
    mixture: torch.Tensor,
    method: str = "auxiva",
    *,
    n_src: int | None = None,
    n_fft: int = 2048,
    hop_length: int = 512,
    n_iter: int | None = None,
    ref_mic: int = 0,
    params: str | None = None,
) -> torch.Tensor:
    """Separate a ``(..., mics, samples)`` waveform; returns ``(..., sources, samples)``."""
    from torchbss.signal import STFT

    stft = STFT(n_fft=n_fft, hop_length=hop_length).to(mixture.device)
    X = stft(mixture)
    sep = make_separator(
        method,
        n_src=n_src or mixture.shape[-2],
        n_freq=X.shape[-2],
        n_iter=n_iter,
        ref_mic=ref_mic,
        params=params,
    ).to(mixture.device)
    with torch.no_grad():
        Y = sep(X)
    return stft.inverse(Y, length=mixture.shape[-1])


def _print_table(rows: list[dict], columns: list[str]) -> None:
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        cells = [f"{row[c]:.2f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        print("| " + " | ".join(cells) + " |")


def cmd_demo(args: argparse.Namespace) -> int:
    """Separate a reverberant 2-speaker mixture, write wavs, print SI-SDR improvements."""
    from torchbss import io
    from torchbss.metrics import si_sdr

    data = Path(args.data) if args.data else _default_data_dir()
    if data is not None and (data / "mixtures" / f"{args.mixture}_mix.flac").is_file():
        mix, fs = io.load(data / "mixtures" / f"{args.mixture}_mix.flac")
        ref, _ = io.load(data / "mixtures" / f"{args.mixture}_ref.flac")
        origin = f"{data / 'mixtures' / args.mixture} (shared data)"
    else:
        from torchbss.data import bundled_speech, random_room_mixture

        dry, fs = bundled_speech()
        room = random_room_mixture(
            dry.double(), 2, sample_rate=fs, generator=torch.Generator().manual_seed(args.seed)
        )
        mix, ref = room.mixture.float(), room.images.float()
        origin = f"simulated room (RT60 {room.rt60:.2f} s) with the bundled speech"
    print(f"mixture: {origin}; {mix.shape[0]} mics, {mix.shape[1] / fs:.1f} s at {fs} Hz")
    out = Path(args.out)
    n_src = ref.shape[0]
    base = si_sdr(ref, mix[:1].expand_as(ref))
    rows = []
    for method in args.methods:
        t0 = time.perf_counter()
        est = separate_waveform(mix.double(), method, n_src=n_src).float()
        elapsed = time.perf_counter() - t0
        # match each estimate to a reference (best permutation by SI-SDR)
        from itertools import permutations

        best = max(
            permutations(range(n_src)), key=lambda p: float(si_sdr(ref, est[list(p)]).mean())
        )
        est = est[list(best)]
        score = si_sdr(ref, est)
        for k in range(n_src):
            io.save(out / method / f"source{k}.wav", est[k : k + 1], fs)
        rows.append(
            {
                "method": method,
                **{f"SI-SDRi src{k} (dB)": float(score[k] - base[k]) for k in range(n_src)},
                "mean SI-SDRi (dB)": float((score - base).mean()),
                "time (s)": elapsed,
            }
        )
    io.save(out / "mixture.wav", mix, fs)
    _print_table(rows, list(rows[0]))
    print(f"wrote {out}/<method>/source*.wav and {out}/mixture.wav")
    return 0


def cmd_separate(args: argparse.Namespace) -> int:
    """Separate an audio file into ``n_src`` wav files."""
    from torchbss import io

    mix, fs = io.load(args.input)
    if mix.shape[0] < 2:
        raise SystemExit(
            f"error: {args.input} has {mix.shape[0]} channel; multichannel BSS needs >= 2 mics"
        )
    device = torch.device(args.device)
    t0 = time.perf_counter()
    est = separate_waveform(
        mix.to(device),
        args.method,
        n_src=args.n_src,
        n_fft=args.n_fft,
        hop_length=args.hop,
        n_iter=args.n_iter,
        ref_mic=args.ref_mic,
        params=args.params,
    ).cpu()
    elapsed = time.perf_counter() - t0
    out = Path(args.out)
    stem = Path(args.input).stem
    for k in range(est.shape[0]):
        io.save(out / f"{stem}_source{k}.wav", est[k : k + 1].float(), fs, subtype=args.subtype)
    print(
        f"separated {args.input} ({mix.shape[0]} mics, {mix.shape[1] / fs:.1f} s) into "
        f"{est.shape[0]} sources with {args.method} in {elapsed:.2f} s -> {out}/"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score estimates against references (SDR, SI-SDR, BSS-eval with permutation)."""
    from torchbss import io
    from torchbss.metrics import bss_eval_sdr, si_sdr

    ref, fs = io.load(args.reference, dtype=torch.float64)
    ests = [io.load(p, dtype=torch.float64) for p in args.estimates]
    for path, (_, fs_e) in zip(args.estimates, ests):
        if fs_e != fs:
            raise SystemExit(f"error: {path} is at {fs_e} Hz, the reference at {fs} Hz")
    est = torch.cat([e for e, _ in ests], dim=0)
    n = min(ref.shape[-1], est.shape[-1])
    ref, est = ref[:, :n], est[:, :n]
    if est.shape[0] != ref.shape[0]:
        raise SystemExit(
            f"error: {est.shape[0]} estimated channels for {ref.shape[0]} reference channels"
        )
    sdr, sir, sar, perm = bss_eval_sdr(ref, est, filter_length=args.filter_length)
    est = est[perm]
    result = {
        "sdr_db": sdr.tolist(),
        "sir_db": sir.tolist(),
        "sar_db": sar.tolist(),
        "si_sdr_db": si_sdr(ref, est).tolist(),
        "permutation": perm.tolist(),
    }
    if args.mixture:
        mix, _ = io.load(args.mixture, dtype=torch.float64)
        base = si_sdr(ref, mix[args.ref_mic : args.ref_mic + 1, :n].expand_as(ref))
        result["si_sdri_db"] = (si_sdr(ref, est) - base).tolist()
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Time the separators on a synthetic mixture (a quick, self-contained benchmark)."""
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    fs = 16000
    rows = []
    for n_mics in args.mics:
        x = torch.randn(args.batch, n_mics, int(args.seconds * fs))
        for method in args.methods:
            separate_waveform(x, method)  # warm-up
            t0 = time.perf_counter()
            for _ in range(args.repeat):
                separate_waveform(x, method)
            dt = (time.perf_counter() - t0) / args.repeat
            rows.append(
                {
                    "method": method,
                    "mics": n_mics,
                    "seconds": args.seconds,
                    "time (s)": dt,
                    "real-time factor": dt / args.seconds,
                }
            )
    _print_table(rows, list(rows[0]))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Fine-tune online ILRMA end to end (delegates to :mod:`torchbss.training`)."""
    from torchbss.training.online_ilrma import main as train_main

    return train_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchbss", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="separate a reverberant speech mixture and score it")
    p.add_argument("--out", default="out/demo", help="output folder for the wavs")
    p.add_argument("--data", default=None, help="shared data folder (default: ../shared/data)")
    p.add_argument("--mixture", default="2x2_00", help="mixture name in <data>/mixtures")
    p.add_argument("--methods", nargs="+", default=["auxiva", "ilrma"], choices=METHODS)
    p.add_argument("--seed", type=int, default=0, help="room seed when simulating")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("separate", help="separate a multichannel audio file")
    p.add_argument("input", help="multichannel .wav/.flac/.ogg file")
    p.add_argument("--out", default="out/separated")
    p.add_argument("--method", default="auxiva", choices=METHODS)
    p.add_argument("--n-src", type=int, default=None, help="number of sources (default: mics)")
    p.add_argument("--n-iter", type=int, default=None)
    p.add_argument("--n-fft", type=int, default=2048)
    p.add_argument("--hop", type=int, default=512)
    p.add_argument("--ref-mic", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--subtype", default="int16", help="output sample format")
    p.add_argument("--params", default=None, help="trained online-ILRMA parameters (.pt)")
    p.set_defaults(func=cmd_separate)

    p = sub.add_parser("evaluate", help="score estimates against reference signals")
    p.add_argument("--reference", required=True, help="file with one reference per channel")
    p.add_argument("--estimates", required=True, nargs="+", help="estimate file(s)")
    p.add_argument("--mixture", default=None, help="mixture file, for SI-SDR improvement")
    p.add_argument("--ref-mic", type=int, default=0)
    p.add_argument("--filter-length", type=int, default=512)
    p.add_argument("--json", default=None, help="also write the scores to this file")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("benchmark", help="time the separators on a synthetic mixture")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--mics", nargs="+", type=int, default=[2, 4])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("train", help="fine-tune online ILRMA end to end (see --help)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options of the training script")
    p.set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
