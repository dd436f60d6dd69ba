"""The shipped neural-auxiva against the one it replaced, on a second room simulator.

``python -m bench.second_simulator [rooms per case]`` simulates rooms with pyroomacoustics
(not torchbss's own image-source code, which made the training and validation mixtures) and
the 5 real speakers of ``../shared/data/speech`` (never in training; not the 9 report
mixtures), 2x2 / 3x3 / 2 sources on 4 mics, and scores the shipped ``neural-auxiva``, the
model shipped before it (``torchbss/assets/neural_auxiva_2x2.pt`` at ``PREVIOUS_REV``) and
AuxIVA-IP2-Laplace at the same 20 iterations: SI-SDRi at mic 0 (dB). Writes
``bench/results/second_simulator.json``. pyroomacoustics is a test/bench-only dependency.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyroomacoustics as pra
import soundfile as sf
import torch

from bench._common import write_json
from torchbss import STFT, AuxIVA
from torchbss.export import load_separator, pretrained
from torchbss.metrics import si_sdr, solve_permutation

ROOT = Path(__file__).resolve().parents[1]
#: the last commit that shipped the neural-auxiva trained without speed perturbation
PREVIOUS_REV = "d7755a7"

FS = 16000
N = 8 * FS
SPK = [
    "libri_198-209-0000",
    "libri_3436-172162-0000",
    "libri_5703-47212-0000",
    "arctic_aew",
    "arctic_axb",
]
dry = {
    s: sf.read(ROOT.parent / "shared" / "data" / "speech" / f"{s}.flac", dtype="float64")[0]
    for s in SPK
}
st = STFT(n_fft=2048, hop_length=512)


def room(seed, K, M):
    rng = np.random.default_rng(seed)
    dim = np.array([rng.uniform(5, 8), rng.uniform(4, 6), rng.uniform(2.6, 3.2)])
    rt60 = rng.uniform(0.15, 0.45)
    absorb, order = pra.inverse_sabine(rt60, dim)
    r = pra.ShoeBox(dim, fs=FS, materials=pra.Material(absorb), max_order=order)
    spacing = rng.uniform(0.03, 0.15)
    c = np.array([rng.uniform(2, dim[0] - 2), rng.uniform(2, dim[1] - 2), rng.uniform(1.2, 1.5)])
    phi = rng.uniform(0, np.pi)
    off = (np.arange(M) - (M - 1) / 2) * spacing
    mics = c[:, None] + np.stack([off * np.cos(phi), off * np.sin(phi), np.zeros(M)])
    while True:
        az = rng.uniform(-80, 80, K)
        if K == 1 or np.min(np.diff(np.sort(az))) >= 25:
            break
    spk = rng.choice(len(SPK), K, replace=False)
    for k in range(K):
        d = rng.uniform(1, 2)
        a = np.deg2rad(az[k]) + phi + np.pi / 2
        pos = c + np.array([d * np.cos(a), d * np.sin(a), rng.uniform(1.4, 1.8) - c[2]])
        pos[:2] = np.clip(pos[:2], 0.3, dim[:2] - 0.3)
        x = dry[SPK[spk[k]]]
        s0 = rng.integers(0, max(1, len(x) - N))
        sig = np.zeros(N)
        seg = x[s0 : s0 + N]
        sig[: len(seg)] = seg
        r.add_source(pos, signal=sig)
    r.add_microphone_array(pra.MicrophoneArray(mics, FS))
    r.compute_rir()
    imgs = []
    for k in range(K):
        h = [r.rir[m][k] for m in range(M)]
        L = max(len(v) for v in h)
        imgs.append(
            np.stack(
                [
                    np.convolve(dry_sig, np.pad(v, (0, L - len(v))))[:N]
                    for v, dry_sig in zip(h, [r.sources[k].signal] * M)
                ]
            )
        )
    imgs = np.stack(imgs)  # K, M, N
    imgs /= np.sqrt((imgs[:, 0] ** 2).mean(-1))[:, None, None]
    mix = imgs.sum(0)
    mix += rng.standard_normal(mix.shape) * np.sqrt((mix**2).mean() / 1e4)
    g = 0.9 / np.abs(mix).max()
    return torch.tensor(mix * g, dtype=torch.float32), torch.tensor(imgs[:, 0] * g)


def score(sep, mix, ref):
    with torch.no_grad():
        Y = sep(st(mix).to(torch.complex64)).sources
    est = st.inverse(Y, length=mix.shape[-1]).double()
    k = ref.shape[0]
    s = si_sdr(ref[:, None].expand(k, k, -1), est[None].expand(k, k, -1))
    best = s.gather(-1, solve_permutation(s)[:, None])[:, 0]
    return float((best - si_sdr(ref, mix[:1].double().expand_as(ref))).mean())


def main() -> None:
    torch.set_num_threads(1)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    previous = Path(tempfile.mkdtemp()) / "previous.pt"
    previous.write_bytes(
        subprocess.run(
            ["git", "show", f"{PREVIOUS_REV}:torchbss/assets/neural_auxiva_2x2.pt"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    )
    rows = []
    for case, K, M in (("2x2", 2, 2), ("3x3", 3, 3), ("2s4m", 2, 4)):
        for i in range(n):
            mix, ref = room(777000 + 100 * M + i, K, M)
            ks = K if K < M else None
            new = pretrained("neural-auxiva", n_src=ks)
            old = load_separator(previous)[0].separator
            if ks:
                old.n_src = ks
            lap = AuxIVA(n_iter=20, update="ip2", source_model="laplace", n_src=ks)
            r = [score(s, mix, ref) for s in (new, old, lap)]
            rows.append((case, i, r))
            print(case, i, [round(x, 2) for x in r], flush=True)
    a = np.array([r for _, _, r in rows])
    summary = []
    for case in ("2x2", "3x3", "2s4m", "all"):
        sel = np.array([c == case or case == "all" for c, _, _ in rows])
        b = a[sel]
        print(
            case,
            "mean new/v1/lap",
            b.mean(0).round(2),
            "median",
            np.median(b, 0).round(2),
            "collapsed(<2)",
            (b < 2).sum(0),
            "new>v1",
            int((b[:, 0] > b[:, 1]).sum()),
            "/",
            len(b),
        )
        summary.append(
            {
                "case": case,
                "rooms": len(b),
                "methods": ["neural_auxiva_shipped", "neural_auxiva_v1", "auxiva_ip2_laplace_it20"],
                "mean": b.mean(0).round(2).tolist(),
                "median": np.median(b, 0).round(2).tolist(),
                "collapsed_below_2db": (b < 2).sum(0).tolist(),
                "shipped_better_rooms": int((b[:, 0] > b[:, 1]).sum()),
            }
        )
    table = [
        {
            "case": e["case"],
            "rooms": e["rooms"],
            **{f"{m}_mean": v for m, v in zip(("shipped", "v1", "laplace20"), e["mean"])},
            **{f"{m}_median": v for m, v in zip(("shipped", "v1", "laplace20"), e["median"])},
            **{
                f"{m}_collapsed": int(v)
                for m, v in zip(("shipped", "v1", "laplace20"), e["collapsed_below_2db"])
            },
            "shipped_better_than_v1": e["shipped_better_rooms"],
        }
        for e in summary
    ]
    out = write_json(
        "heldout_second_simulator",
        {
            "rooms_per_case": n,
            "previous_rev": PREVIOUS_REV,
            "tables": [
                {
                    "title": "Second simulator (pyroomacoustics rooms, real speakers): shipped "
                    "neural-auxiva vs the one it replaced (v1) vs AuxIVA-IP2-Laplace, "
                    "20 iterations",
                    "rows": table,
                    "note": "SI-SDRi (dB) at mic 0, whole signal; collapsed = runs below 2 dB. "
                    "`python -m bench.second_simulator`.",
                }
            ],
            "rows": [{"case": c, "room": i, "si_sdri_db": r} for c, i, r in rows],
        },
    )
    print("wrote", out)


if __name__ == "__main__":
    main()
