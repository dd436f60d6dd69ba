"""How much can a learned source model give online ILRMA? Oracle weights as the ceiling.

``python -m bench.heldout_oracle_weights [--rooms 60] [--jobs 2]`` runs online ILRMA (class
defaults: 2 bases, forgetting 0.96, 1 inner iteration, the running permutation alignment) on the
validation protocol's ``val`` rooms (real speakers, 2x2 / 3x3 / 2 sources on 4 mics), with the
weights of its spatial update taken from:

- ``default``: its own NMF model (the untrained separator);
- ``tuned``: the NMF model and the learned correction of the shipped ``online-ilrma-tuned``;
- ``oracle_envelope``: the true power envelope of each source, ``1 / (mean_f |S_kft|^2 + d_k)``
  (the time-varying Gauss model of online AuxIVA, with the envelope known);
- ``oracle_tf``: the true power of each source in each bin, ``1 / (|S_kft|^2 + d_k)``;

where ``S_k`` is the STFT of the reverberant image of source ``k`` at the reference mic (the
protocol's target) and ``d_k = floor x`` its mean power (``--floor``, default 1e-2). The oracle
weights enter through the same hook as the learned correction (``OnlineILRMA.correction``), for
frame ``t`` only its own weights, so the rest of the algorithm (the spatial update, the step
sizes, the realignment) is unchanged. No learned weight model can do better than knowing the
sources; the gap between ``oracle_*`` and ``default`` is what a source model can add at this
spatial update. Writes ``bench/results/heldout_oracle_weights.json``.

``--voices synthetic`` runs the same rooms with the eight espeak-ng voices the shipped model was
trained on (:data:`bench.validation.dataset.VOICES`; rooms still unseen) and writes
``heldout_oracle_weights_synthetic.json``: how much of the gap is the voices, how much the model.
"""

from __future__ import annotations

import argparse
import statistics
from concurrent.futures import ProcessPoolExecutor

import torch
from torch import nn

import torchbss
from bench._common import write_json
from bench.validation.dataset import CASES, VOICES, ValidationMixture, load_mixture, room_indices
from bench.validation.run import _STFT, COLLAPSE_DB, mixture_stft, score_estimates
from torchbss.export import pretrained

METHODS = ("default", "tuned", "oracle_envelope", "oracle_tf")


class OracleWeights(nn.Module):
    """Stands in for :class:`~torchbss.source_models.FrameCorrection`: returns frame ``t``'s
    precomputed weights ``phi[..., t]`` ``(sources, freq)`` at its ``t``-th call (one inner
    iteration per frame), whatever the model's own weights were."""

    def __init__(self, phi: torch.Tensor) -> None:
        super().__init__()
        self.phi, self.t = phi, 0

    def forward(self, p: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        out = self.phi[..., self.t].to(phi.dtype)
        self.t += 1
        return out


def oracle_weights(images: torch.Tensor, kind: str, floor: float) -> torch.Tensor:
    """``1 / r`` ``(sources, freq, frames)`` from the images ``(sources, samples)``."""
    S = _STFT(images.float())
    P = S.real.square() + S.imag.square()  # (K, F, T)
    if kind == "oracle_envelope":
        P = P.mean(-2, keepdim=True).expand_as(P)
    return 1.0 / (P + floor * P.mean((-2, -1), keepdim=True))


def run_room(case: str, room: int, floor: float, voices: str) -> tuple[str, int, list]:
    """:func:`method_scores` of a validation room, in a worker (one thread)."""
    torch.set_num_threads(1)
    return case, room, method_scores(load_mixture(case, room, voices=voices), floor)


def method_scores(item: ValidationMixture, floor: float) -> list[list[float]]:
    """Mean SI-SDRi over the sources ``[whole signal, second half]`` of each of
    :data:`METHODS` on a mixture."""
    X = mixture_stft(item)
    n_src = item.images.shape[0]
    scores = []
    for method in METHODS:
        if method == "tuned":
            sep = pretrained("online-ilrma-tuned", n_src=n_src)
        else:
            sep = torchbss.OnlineILRMA(n_freq=X.shape[-2], n_src=n_src)
            if method != "default":
                sep.correction = OracleWeights(oracle_weights(item.images, method, floor))
        with torch.no_grad():
            whole, second = score_estimates(item, sep(X).sources)
        scores.append([statistics.fmean(whole), statistics.fmean(second)])
    return scores


def summary(rows: list, case: str, part: int) -> dict:
    """One table row: per method, mean / median / collapsed runs of one part of the signal."""
    picked = [s for c, _, s in rows if case in (c, "all")]
    out: dict = {"case": case, "rooms": len(picked)}
    for i, method in enumerate(METHODS):
        values = [s[i][part] for s in picked]
        out[f"{method}_mean"] = round(statistics.fmean(values), 2)
        out[f"{method}_median"] = round(statistics.median(values), 2)
        out[f"{method}_collapsed"] = sum(v < COLLAPSE_DB for v in values)
    for i, method in enumerate(METHODS[1:], 1):  # paired gains over the untrained default
        gain = statistics.fmean(s[i][part] - s[0][part] for s in picked)
        out[f"{method}_gain_db"] = round(gain, 2)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=60, help="val rooms per case")
    parser.add_argument("--floor", type=float, default=1e-2, help="oracle floor (x mean power)")
    parser.add_argument("--jobs", type=int, default=1, help="processes (one thread each)")
    parser.add_argument(
        "--voices", choices=sorted(VOICES), default="real", help="speakers of the rooms"
    )
    args = parser.parse_args(argv)
    rooms = room_indices("val", args.rooms)
    tasks = [(case, room, args.floor, args.voices) for case in CASES for room in rooms]
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(run_room, *zip(*tasks)))
    synthetic = args.voices == "synthetic"
    voices = " with the synthetic training voices" if synthetic else ""
    command = "python -m bench.heldout_oracle_weights --jobs 2" + (
        f" --voices {args.voices}" if synthetic else ""
    )
    tables = []
    for part, name in ((0, "whole signal"), (1, "second half")):
        tables.append(
            {
                "title": f"Online ILRMA with oracle weights: the ceiling of a learned source "
                f"model ({name}, {args.rooms} val rooms per case{voices})",
                "rows": [summary(rows, case, part) for case in (*CASES, "all")],
                "note": "SI-SDRi (dB) at mic 0, mean over sources, best permutation; collapsed "
                "= runs below 2 dB; *_gain_db: paired mean gain over `default`. Oracle weights "
                f"floored at {args.floor} x the source's mean power. "
                f"`{command}`.",
            }
        )
    out = write_json(
        "heldout_oracle_weights" + ("_synthetic" if synthetic else ""),
        {
            "rooms_per_case": args.rooms,
            "voices": args.voices,
            "floor": args.floor,
            "methods": list(METHODS),
            "tables": tables,
            "rows": [{"case": c, "room": r, "whole_second_db": s} for c, r, s in rows],
        },
    )
    for table in tables:
        for row in table["rows"]:
            print(row)
    print("wrote", out)


if __name__ == "__main__":
    main()
