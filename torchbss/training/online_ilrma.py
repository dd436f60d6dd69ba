"""Fine-tune online ILRMA end to end (unrolled over all frames) with a PIT negative SI-SDR loss.

The training data are reverberant mixtures simulated on the fly with the torch image-source
room model (:mod:`torchbss.data.room`) from dry speech: the utterances of
``../shared/data/speech`` when that folder exists, else the two bundled ones. Held-out mixtures
use other rooms (other seeds) and, with the shared speech, other utterances. The script reports
the SI-SDR improvement of the untrained and of the fine-tuned model on the held-out set and saves
the trained parameters as a small ``.pt`` file that ``torchbss separate --method online-ilrma
--params FILE`` loads.

Usage::

    python -m torchbss.training.online_ilrma --steps 200 --out torchbss/assets/online_ilrma_2x2.pt
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch

from torchbss.data.room import random_room_mixture
from torchbss.losses import apply_permutation, pit
from torchbss.metrics import si_sdr
from torchbss.separators.online import OnlineILRMA
from torchbss.signal import STFT

__all__ = [
    "main",
    "load_online_ilrma",
    "save_online_ilrma",
    "make_mixtures",
    "cached_mixtures",
    "evaluate",
]

# utterances kept for the held-out set when the shared speech folder is available
HELD_OUT_SPEECH = ("arctic_aew", "arctic_axb", "espeak_07", "espeak_08")


def _speech_pool(data_dir: Path | None) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
    """Dry utterances for training and for the held-out set, ``(samples,)`` float64 each."""
    from torchbss.io import load

    if data_dir is not None and (data_dir / "speech").is_dir():
        train, held = [], []
        for path in sorted((data_dir / "speech").glob("*.flac")):
            x, fs = load(path, dtype=torch.float64)
            (held if path.stem in HELD_OUT_SPEECH else train).append(x[0])
        return train, held, fs
    from torchbss.data import bundled_speech

    sig, fs = bundled_speech()
    pool = [s.double() for s in sig]
    return pool, pool, fs


def make_mixtures(
    pool: list[torch.Tensor],
    n: int,
    *,
    n_src: int,
    n_mics: int,
    seconds: float,
    sample_rate: int,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Simulate ``n`` mixtures from random windows of random utterances of ``pool``.

    Returns:
        ``(mixtures (n, mics, samples), images (n, n_src, samples))`` float64.
    """
    g = torch.Generator().manual_seed(seed)
    length = int(seconds * sample_rate)
    mixes, images = [], []
    for _ in range(n):
        idx = torch.randperm(len(pool), generator=g)[:n_src]
        if len(pool) < n_src:
            idx = torch.randint(len(pool), (n_src,), generator=g)
        dry = torch.zeros(n_src, length, dtype=torch.float64)
        for k, i in enumerate(idx.tolist()):
            utt = pool[i]
            start = int(torch.randint(max(1, utt.shape[-1] - length), (1,), generator=g))
            seg = utt[start : start + length]
            dry[k, : seg.shape[-1]] = seg
        room = random_room_mixture(dry, n_mics, sample_rate=sample_rate, generator=g)
        mixes.append(room.mixture)
        images.append(room.images)
    return torch.stack(mixes), torch.stack(images)


def cached_mixtures(
    cache_dir: Path | None, pool: list[torch.Tensor], n: int, **kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`make_mixtures`, cached as a ``.pt`` file in ``cache_dir`` keyed by the arguments.

    The key hashes the arguments and the lengths and sums of the pool's utterances, so a change
    of the speech data or of any setting simulates afresh. ``cache_dir=None`` disables the cache.
    """
    if cache_dir is None:
        return make_mixtures(pool, n, **kwargs)
    sig = [n, sorted(kwargs.items()), [(u.shape[-1], round(float(u.sum()), 6)) for u in pool]]
    key = hashlib.sha1(repr(sig).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"mixtures_{key}.pt"
    if path.is_file():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        return blob["mixtures"].double(), blob["images"].double()
    mixtures, images = make_mixtures(pool, n, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"mixtures": mixtures.float(), "images": images.float()}, path)
    return mixtures.float().double(), images.float().double()


@torch.no_grad()
def evaluate(
    sep: OnlineILRMA, stft: STFT, mixtures: torch.Tensor, images: torch.Tensor, ref_mic: int = 0
) -> float:
    """Mean SI-SDR improvement (dB, best permutation) of ``sep`` on a set of mixtures."""
    X = stft(mixtures)
    est = stft.inverse(sep(X), length=mixtures.shape[-1])
    _, perm = pit(None, est, images, reduction="none")
    est = apply_permutation(est, perm)
    base = si_sdr(images, mixtures[:, ref_mic : ref_mic + 1].expand_as(images))
    return float((si_sdr(images, est) - base).mean())


def save_online_ilrma(sep: OnlineILRMA, path: str | Path, meta: dict | None = None) -> Path:
    """Save the trained parameters and the constructor settings of an online ILRMA."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {
        "n_src": sep.n_src,
        "n_freq": sep.n_freq,
        "n_basis": sep.n_basis,
        "minibatch": sep.minibatch,
        "inner_iter": sep.inner_iter,
        "forget_per_freq": sep.forget_logit.numel() > 1,
    }
    state = {k: v.detach().float().cpu() for k, v in sep.state_dict().items()}
    torch.save({"config": config, "state_dict": state, "meta": meta or {}}, path)
    return path


def load_online_ilrma(path: str | Path, *, ref_mic: int = 0, **overrides) -> OnlineILRMA:
    """Load an online ILRMA saved by :func:`save_online_ilrma` (inference mode, not trainable)."""
    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    config = {**blob["config"], **overrides}
    sep = OnlineILRMA(
        n_src=config["n_src"],
        n_freq=config["n_freq"],
        n_basis=config["n_basis"],
        minibatch=config["minibatch"],
        inner_iter=config["inner_iter"],
        ref_mic=ref_mic,
        trainable=True,
        forget_per_freq=config["forget_per_freq"],
    )
    sep.load_state_dict({k: v.double() for k, v in blob["state_dict"].items()})
    return sep.requires_grad_(False)


def _cpu_model() -> str:
    """CPU model name from ``/proc/cpuinfo`` (``"unknown"`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="torchbss train", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument(
        "--basis-lr",
        type=float,
        default=0.0,
        help="learning rate of the initial NMF bases (0: keep them fixed, the default, since "
        "the ~20k per-source, per-frequency values overfit a small training set)",
    )
    p.add_argument("--n-src", type=int, default=2)
    p.add_argument("--n-mics", type=int, default=2)
    p.add_argument("--seconds", type=float, default=4.0, help="held-out clip length (s)")
    p.add_argument("--train-seconds", type=float, default=None, help="training clip (s)")
    p.add_argument("--n-train", type=int, default=64, help="simulated training mixtures")
    p.add_argument("--n-heldout", type=int, default=16, help="simulated held-out mixtures")
    p.add_argument("--n-fft", type=int, default=2048)
    p.add_argument("--hop", type=int, default=512)
    p.add_argument("--n-basis", type=int, default=10)
    p.add_argument("--inner-iter", type=int, default=1, help="inner iterations per frame")
    p.add_argument("--tbptt", type=int, default=None, help="truncate BPTT every K frames")
    p.add_argument("--checkpoint", action="store_true", help="gradient checkpointing")
    p.add_argument("--data", default=None, help="shared data folder with speech/")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--cache", default="out", help="folder caching the simulated mixtures ('' disables)"
    )
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default="out/online_ilrma_2x2.pt")
    p.add_argument("--report", default=None, help="write the run summary (JSON) here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from torchbss.cli.main import _default_data_dir

    data_dir = Path(args.data) if args.data else _default_data_dir()
    train_pool, held_pool, fs = _speech_pool(data_dir)
    t_start = time.perf_counter()
    cache = Path(args.cache) if args.cache else None
    train_seconds = args.train_seconds or args.seconds
    common = dict(n_src=args.n_src, n_mics=args.n_mics, sample_rate=fs)
    train_mix, train_img = cached_mixtures(
        cache, train_pool, args.n_train, seconds=train_seconds, seed=args.seed, **common
    )
    held_mix, held_img = cached_mixtures(
        cache, held_pool, args.n_heldout, seconds=args.seconds, seed=10_000 + args.seed, **common
    )
    data_time = time.perf_counter() - t_start
    print(f"{args.n_train} + {args.n_heldout} mixtures ready in {data_time:.1f} s")

    stft = STFT(n_fft=args.n_fft, hop_length=args.hop).double()
    n_freq = args.n_fft // 2 + 1
    plain = OnlineILRMA(n_src=args.n_src, n_freq=n_freq, n_basis=args.n_basis)
    sep = OnlineILRMA(
        n_src=args.n_src,
        n_freq=n_freq,
        n_basis=args.n_basis,
        inner_iter=args.inner_iter,
        trainable=True,
        forget_per_freq=True,
        tbptt=args.tbptt,
        checkpoint=args.checkpoint,
    )
    before = evaluate(plain, stft, held_mix, held_img)
    print(f"held-out SI-SDRi of the plain default model: {before:.2f} dB")
    before_same = before
    if args.inner_iter != 1:
        before_same = evaluate(sep, stft, held_mix, held_img)
        print(f"held-out SI-SDRi before training (same config): {before_same:.2f} dB")
    groups = [{"params": [p for n, p in sep.named_parameters() if n != "basis_raw"]}]
    if args.basis_lr > 0:
        groups.append({"params": [sep.basis_raw], "lr": args.basis_lr})
    else:
        sep.basis_raw.requires_grad_(False)
    opt = torch.optim.Adam(groups, lr=args.lr)
    g = torch.Generator().manual_seed(args.seed + 1)
    t_train = time.perf_counter()
    history = []
    for step in range(1, args.steps + 1):
        idx = torch.randperm(args.n_train, generator=g)[: args.batch]
        mix, img = train_mix[idx], train_img[idx]
        est = stft.inverse(sep(stft(mix)), length=mix.shape[-1])
        loss, _ = pit(None, est, img)  # PIT negative SI-SDR
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(sep.parameters(), 1.0)
        opt.step()
        history.append(float(loss.detach()))
        if step % 10 == 0 or step == 1:
            recent = sum(history[-10:]) / len(history[-10:])
            print(f"step {step:4d}  loss {recent:7.3f}  ({time.perf_counter() - t_train:.0f} s)")
    train_time = time.perf_counter() - t_train
    after = evaluate(sep, stft, held_mix, held_img)
    print(f"held-out SI-SDRi after training: {after:.2f} dB (before {before:.2f} dB)")
    summary = {
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "basis_lr": args.basis_lr,
        "n_src": args.n_src,
        "n_mics": args.n_mics,
        "heldout_seconds": args.seconds,
        "train_seconds": train_seconds,
        "n_train": args.n_train,
        "n_heldout": args.n_heldout,
        "stft": [args.n_fft, args.hop],
        "speech": "bundled" if data_dir is None or not (data_dir / "speech").is_dir() else "shared",
        "heldout_speech": list(HELD_OUT_SPEECH),
        "data_time_s": round(data_time, 1),
        "train_time_s": round(train_time, 1),
        "total_time_s": round(time.perf_counter() - t_start, 1),
        "device": "cpu",
        "cpu": _cpu_model(),
        "torch": str(torch.__version__),
        "threads": torch.get_num_threads(),
        "inner_iter": args.inner_iter,
        "heldout_si_sdri_before_db": round(before, 2),
        "heldout_si_sdri_untrained_same_config_db": round(before_same, 2),
        "heldout_si_sdri_after_db": round(after, 2),
        "forget_mean": float(torch.sigmoid(sep.forget_logit.detach()).mean()),
        "load": float(torch.nn.functional.softplus(sep.load_raw.detach())),
        "inner_weights": [round(float(w), 4) for w in sep.inner_weights.detach()],
        "final_train_loss": round(sum(history[-10:]) / max(1, len(history[-10:])), 3),
    }
    save_online_ilrma(sep, args.out, meta=summary)
    print(f"saved parameters to {args.out}")
    print(json.dumps(summary, indent=2))
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
