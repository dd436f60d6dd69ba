"""The trained separators on the held-out protocol, beside the classic ones.

``python -m bench.heldout_trained [--rooms 20]`` runs (resumable, through
:mod:`bench.validation.run`) the shipped trained separators and the classic methods at the same
number of iterations on the ``test`` rooms of the validation protocol (2x2, 3x3, 2 sources on 4
mics; real speech of speakers and rooms never used in training), then writes
``bench/results/heldout_trained.json``: per method and case, mean / median SI-SDRi and collapsed
runs (< 2 dB), whole signal and second half; the gain over AuxIVA-IP2-Laplace with the same
iterations; and how each model was trained (from its file's metadata).
"""

from __future__ import annotations

import argparse
import statistics

import torch

from bench._common import print_table, write_json
from bench.validation.dataset import CASES
from bench.validation.run import (
    METHODS,
    RESULTS_DIR,
    Method,
    aggregate,
    evaluate,
    load_results,
    run_score,
)
from torchbss.export import PRETRAINED, load_separator, pretrained_path

#: the trained method (as shipped: with the frequency-permutation alignment, also after iteration
#: 10 since stop 27; with it at the end only, as shipped at stops 22-26; and without it),
#: its classic baseline with the same iterations (without and with the alignment), and others
COMPARED = (
    "neural_auxiva_shipped",
    "neural_auxiva_end_aligned",
    "neural_auxiva_unaligned",
    "auxiva_ip2_laplace_it20",
    "auxiva_ip2_laplace_it20_aligned",
    "auxiva_ip2_gauss_it20",
)
#: the shipped fine-tuned online ILRMA (since stop 29) and its untrained start (the defaults)
ONLINE_SHIPPED = ("online_ilrma_tuned_shipped", "online_ilrma_default")
BASELINE = "auxiva_ip2_laplace_it20"
#: (method, baseline) pairs of the gain table: the issue's comparison (the plain classic
#: algorithm), the same pipeline on both sides (both aligned), and without the alignment
GAINS = (
    ("neural_auxiva_shipped", BASELINE),
    ("neural_auxiva_shipped", "auxiva_ip2_laplace_it20_aligned"),
    ("neural_auxiva_unaligned", BASELINE),
    ("neural_auxiva_shipped", "neural_auxiva_unaligned"),
    ("neural_auxiva_shipped", "neural_auxiva_end_aligned"),
    ("auxiva_ip2_laplace_it20_aligned", BASELINE),
    ONLINE_SHIPPED,
)
#: the untrained start of the online fine-tuning run (forget 0.98, load 1e-2) and the default
ONLINE_COMPARED = ("online_ilrma_b2_f0.98_l0.01", "online_ilrma_b2_f0.96_l0.03")
RESULTS = "validation_trained_test"
#: the rows of the neural-auxiva models shipped before, kept in the results file under these
#: names for comparison: v2 (stop 20: speed-perturbed 8 espeak voices), v1 (stops 17-19)
PREVIOUS_NEURAL = ("neural_auxiva_v2", "neural_auxiva_v1")


def gains(rows: list, method: str, baseline: str) -> list[dict]:
    """Per case and pooled: mean paired gain (dB) of ``method`` over ``baseline`` per room."""
    by = {(r[3], r[0], r[1]): r for r in rows}
    out = []
    for case in (*CASES, "all"):
        pairs = [
            (run_score(by[(method, c, room)], "whole"), run_score(by[(baseline, c, room)], "whole"))
            for (m, c, room) in by
            if m == method and (case == "all" or c == case) and (baseline, c, room) in by
        ]
        if not pairs:
            continue
        diff = [a - b for a, b in pairs]
        out.append(
            {
                "case": case,
                "rooms": len(pairs),
                "gain_mean_db": round(statistics.fmean(diff), 2),
                "gain_median_db": round(statistics.median(diff), 2),
                "better_rooms": sum(d > 0 for d in diff),
            }
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=20, help="test rooms per case")
    parser.add_argument(
        "--online-export",
        default=None,
        help="also score this exported fine-tuned online ILRMA (a candidate, not shipped) "
        "against the untrained configuration it started from and the default",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    path = RESULTS_DIR / f"{RESULTS}.json"
    methods = [METHODS[m] for m in COMPARED + ONLINE_SHIPPED]
    if args.online_export:
        methods += [
            Method("online_ilrma_finetuned", f"file:{args.online_export}"),
            *(METHODS[m] for m in ONLINE_COMPARED),
        ]
    evaluate(methods, CASES, "test", args.rooms, (0,), path, verbose=False)
    rows = load_results(path)["rows"]
    table = [
        {k: (round(v, 2) if isinstance(v, float) else v) for k, v in e.items()}
        for e in aggregate(rows)
    ]
    gain = [
        {"compared": f"{method} - {baseline}", **g}
        for method, baseline in GAINS
        for g in gains(rows, method, baseline)
    ]
    for previous in PREVIOUS_NEURAL:  # the models shipped before (kept rows; unaligned)
        gain += [
            {"compared": f"neural_auxiva_unaligned - {previous}", **g}
            for g in gains(rows, "neural_auxiva_unaligned", previous)
        ]
    if any(r[3] == "online_ilrma_finetuned" for r in rows):
        gain += [
            {"compared": "online_ilrma_finetuned - its untrained start", **g}
            for g in gains(rows, "online_ilrma_finetuned", ONLINE_COMPARED[0])
        ]
    training = []
    for name in PRETRAINED:
        meta = load_separator(pretrained_path(name))[1]
        info = meta.get("training", {})
        training.append({"model": name, "description": meta.get("description", ""), **info})
    print_table(table)
    print_table(gain)
    write_json(
        "heldout_trained",
        {
            "rooms_per_case": args.rooms,
            "tables": [
                {
                    "title": "Held-out test rooms: trained vs classic (batch: 20 iterations "
                    "each; *_aligned / shipped: with the frequency-permutation alignment)",
                    "rows": table,
                    "note": "SI-SDRi (dB) at mic 0, mean over sources, best permutation; "
                    "collapsed = runs below 2 dB. `python -m bench.heldout_trained`.",
                },
                {
                    "title": "Paired gains per room (whole signal, dB)",
                    "rows": gain,
                },
                {"title": "How the shipped models were trained", "rows": training},
            ],
        },
    )


if __name__ == "__main__":
    main()
