"""The ``torchbss`` command line: demo, separate, evaluate, benchmark, train, eval.

Run ``torchbss <command> --help`` (or ``python -m torchbss <command> --help``) for the options.
Every error is reported in one line (``error: ...``, exit status 2) before any work is done
where it can be checked up front (input files, output locations, devices, arguments).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

__all__ = ["main", "build_parser", "METHODS"]

#: ``--method`` names and the separator class each builds (its own defaults apply)
METHODS = {
    "auxiva": "torchbss.separators.AuxIVA",
    "ilrma": "torchbss.separators.ILRMA",
    "online-auxiva": "torchbss.separators.OnlineAuxIVA",
    "online-ilrma": "torchbss.separators.OnlineILRMA",
}
#: methods backed by a trained model shipped inside the package (torchbss/assets): the names
#: of torchbss.export.PRETRAINED
SHIPPED = ("neural-auxiva", "online-ilrma-tuned")
#: methods whose separator takes ``compile=True`` (``separate --compile``)
COMPILABLE = ("ilrma", "online-auxiva", "online-ilrma")


class CLIError(Exception):
    """A user error reported as one line."""


# ----------------------------------------------------------------------------- argument types
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


# ----------------------------------------------------------------------------- shared pieces
def resolve_device(name: str) -> torch.device:
    """A torch device from its name, checked to exist on this machine."""
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise CLIError(f"unknown device {name!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(
            f"--device {name}: this torch build has no usable CUDA device "
            f"(torch {torch.__version__}); use --device cpu"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CLIError(f"--device {name}: MPS is not available on this machine; use --device cpu")
    return device


def build_separator(method: str, *, n_src: int | None, n_iter: int | None, ref_mic: int,
                    n_freq: int, compile: bool = False,
                    align: bool | None = None) -> torch.nn.Module:  # fmt: skip
    """The separator for ``--method``: its class with only the options the user gave."""
    from torchbss.export import instantiate

    if method not in METHODS:
        raise CLIError(
            f"unknown method {method!r}; choose from {sorted(METHODS) + sorted(SHIPPED)}"
        )
    config: dict = {"_target_": METHODS[method], "ref_mic": ref_mic}
    if n_src is not None:
        config["n_src"] = n_src
    if n_iter is not None:
        if method.startswith("online"):
            raise CLIError(f"--n-iter does not apply to {method} (it processes each frame once)")
        config["n_iter"] = n_iter
    if align is not None:
        if method.startswith("online"):
            raise CLIError(
                f"--align/--no-align apply to the batch methods, not to {method} (a causal "
                "separator cannot look at the whole signal to align its bands)"
            )
        config["align_permutations"] = align
    if method == "online-ilrma":
        config["n_freq"] = n_freq
    if compile:
        if method not in COMPILABLE:
            raise CLIError(
                f"--compile applies to the methods {', '.join(COMPILABLE)} and to music models "
                f"(--model), not to {method}"
            )
        config["compile"] = True
    return instantiate(config)


def _load_waveform_separator(args: argparse.Namespace, n_mics: int, device: torch.device):
    """The :class:`WaveformSeparator` of ``separate``: a method or an exported checkpoint."""
    from torchbss.export import OverrideError, load_pretrained, load_separator
    from torchbss.inference import WaveformSeparator

    checkpoint = args.checkpoint
    if args.method in SHIPPED:
        from torchbss.export import pretrained_path

        if checkpoint is not None:
            raise CLIError(f"--method {args.method} is a shipped checkpoint; drop --checkpoint")
        checkpoint = pretrained_path(args.method)
    if checkpoint is not None:
        overrides = {"compile": True} if args.compile else None
        try:
            if args.method in SHIPPED:  # with its inference settings
                wsep, _ = load_pretrained(args.method, device, overrides)
            else:
                wsep, _ = load_separator(checkpoint, device, overrides)
        except OverrideError:
            raise CLIError(
                f"--compile applies to the methods {', '.join(COMPILABLE)}, to music models "
                f"(--model) and to checkpoints of separators with a compile option (e.g. "
                f"online-ilrma-tuned), not to {checkpoint}"
            ) from None
        sep = wsep.separator
        fixed = {"n_src": args.n_src, "n_iter": args.n_iter}
        if args.method in SHIPPED and args.n_src is not None:
            # both shipped models treat each source on its own: any n_src <= mics
            sep.n_src = fixed.pop("n_src")
        for name, value in fixed.items():
            if value is not None:
                raise CLIError(
                    f"--{name.replace('_', '-')} cannot change a trained checkpoint "
                    f"({checkpoint}); it was trained with its own setting"
                )
        if args.n_fft is not None or args.hop is not None:
            raise CLIError(f"--n-fft/--hop cannot change a trained checkpoint ({checkpoint})")
        settable = (  # (option, attribute, value, what has it)
            ("--ref-mic applies", "ref_mic", args.ref_mic, "separators with a reference mic"),
            ("--align/--no-align apply", "align_permutations", args.align,
             "batch AuxIVA / ILRMA separators"),
        )  # fmt: skip
        for option, attribute, value, owners in settable:
            if value is None:
                continue
            if not hasattr(sep, attribute):
                raise CLIError(
                    f"{option} to {owners}; checkpoint {checkpoint} holds a {type(sep).__name__}"
                )
            setattr(sep, attribute, value)
        expected = getattr(sep, "n_src", None)
        if expected is not None and expected > n_mics:
            raise CLIError(
                f"checkpoint {checkpoint} separates {expected} sources but the input has "
                f"{n_mics} channels"
            )
        return wsep.to(device)
    n_fft = args.n_fft or 2048
    hop = args.hop or 512
    sep = build_separator(
        args.method, n_src=args.n_src, n_iter=args.n_iter, ref_mic=args.ref_mic or 0,
        n_freq=n_fft // 2 + 1, compile=args.compile, align=args.align,
    )  # fmt: skip
    return WaveformSeparator(sep, n_fft=n_fft, hop_length=hop).to(device)


def _default_data_dir() -> Path | None:
    """``../shared/data`` next to the repository, when it exists (never needed by users)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / "data"
        if (candidate / "mixtures").is_dir():
            return candidate
    return None


def _print_table(rows: list[dict], columns: list[str]) -> None:
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        cells = [f"{row[c]:.2f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        print("| " + " | ".join(cells) + " |")


# ----------------------------------------------------------------------------- commands
def cmd_demo(args: argparse.Namespace) -> int:
    """Separate a reverberant 2-speaker mixture, write wavs, print SI-SDR improvements."""
    from torchbss import io
    from torchbss.inference import WaveformSeparator
    from torchbss.metrics import si_sdr, solve_permutation

    name = args.mixture or "2x2_00"
    data = Path(args.data) if args.data is not None else _default_data_dir()
    if args.data is not None or args.mixture is not None:  # asked for: it must be there
        if data is None:
            raise CLIError(
                f"--mixture {args.mixture}: no shared data folder found; give it with --data, "
                "or omit --mixture to simulate a room"
            )
        mix_path = data / "mixtures" / f"{name}_mix.flac"
        if not mix_path.is_file():
            raise CLIError(
                f"no mixture {mix_path} (expected <data>/mixtures/{name}_mix.flac and "
                "_ref.flac); omit --data and --mixture to simulate a room"
            )
    if data is not None and (data / "mixtures" / f"{name}_mix.flac").is_file():
        mix, fs = io.load(data / "mixtures" / f"{name}_mix.flac")
        ref, _ = io.load(data / "mixtures" / f"{name}_ref.flac")
        origin = f"{data / 'mixtures' / name} (shared data)"
    else:
        from torchbss.data import bundled_speech, random_room_mixture

        dry, fs = bundled_speech()
        room = random_room_mixture(
            dry.double(), 2, sample_rate=fs, generator=torch.Generator().manual_seed(args.seed)
        )
        mix, ref = room.mixture.float(), room.images.float()
        origin = f"simulated room (RT60 {room.rt60:.2f} s) with the bundled speech"
    out = Path(args.out)
    n_src = ref.shape[0]
    paths = [out / "mixture.wav"] + [
        out / m / f"source{k}.wav" for m in args.methods for k in range(n_src)
    ]
    io.check_output_paths(paths, overwrite=args.overwrite)
    print(f"mixture: {origin}; {mix.shape[0]} mics, {mix.shape[1] / fs:.1f} s at {fs} Hz")
    base = si_sdr(ref, mix[:1].expand_as(ref))
    rows = []
    for method in args.methods:
        sep = WaveformSeparator(
            build_separator(method, n_src=n_src, n_iter=None, ref_mic=0, n_freq=1025)
        )
        t0 = time.perf_counter()
        with torch.inference_mode():
            est = sep(mix.double()).sources.float()
        elapsed = time.perf_counter() - t0
        pairs = si_sdr(*torch.broadcast_tensors(ref[:, None], est[None, :]))  # (K ref, K est)
        est = est[solve_permutation(pairs)]
        score = si_sdr(ref, est)
        for k in range(n_src):
            io.save(out / method / f"source{k}.wav", est[k : k + 1], fs, overwrite=True)
        rows.append(
            {
                "method": method,
                **{f"SI-SDRi src{k} (dB)": float(score[k] - base[k]) for k in range(n_src)},
                "mean SI-SDRi (dB)": float((score - base).mean()),
                "time (s)": elapsed,
            }
        )
    io.save(out / "mixture.wav", mix, fs, overwrite=True)
    _print_table(rows, list(rows[0]))
    print(f"wrote {out}/<method>/source*.wav and {out}/mixture.wav")
    return 0


def _stem_rules(text: str | None, stems: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """``--stems a,b`` -> the model stems to write and the derived ones (``mixture - ...``)."""
    if not text:
        return list(stems), {}
    wanted = [t.strip() for t in text.split(",") if t.strip()]
    if not wanted:
        raise CLIError(f"--stems {text!r} names no stem; this model outputs {list(stems)}")
    twice = sorted({name for name in wanted if wanted.count(name) > 1})
    if twice:
        raise CLIError(f"--stems names {twice} more than once")
    derived = {}
    for name in wanted:
        if name in stems:
            continue
        if name in ("instrumental", "accompaniment") and len(stems) == 1:
            derived[name] = f"mixture - {stems[0]}"
        else:
            raise CLIError(
                f"unknown stem {name!r}: this model outputs {list(stems)}"
                + (" (and 'instrumental' = mixture - the stem)" if len(stems) == 1 else "")
            )
    return wanted, derived


def cmd_separate_music(args: argparse.Namespace) -> int:
    """``separate --model CONFIG --checkpoint CKPT``: a song into stems with a RoFormer."""
    import os

    from torchbss import io
    from torchbss.models import from_config, load_checkpoint, separate_song

    bss_only = ("method", "n_iter", "align", "n_fft", "hop", "n_src", "ref_mic", "block_seconds",
                "report")  # fmt: skip
    given = [flag for flag in bss_only if getattr(args, flag) is not None]
    if args.images:
        given.append("images")
    if given:
        flags = ", ".join(f"--{flag.replace('_', '-')}" for flag in given)
        raise CLIError(
            f"{flags} apply to the BSS methods (--method), not to music models (--model)"
        )
    spec = from_config(args.model)
    if args.checkpoint is None and os.environ.get("TORCHBSS_ALLOW_UNTRAINED") != "1":
        raise CLIError(
            f"--model {args.model} needs --checkpoint: the weights (a .ckpt/.pt state dict, e.g. "
            "a community MSST checkpoint trained with this config); the config alone builds an "
            "untrained model"
        )
    meta = io.info(args.input)
    if meta.sample_rate != spec.sample_rate:
        raise CLIError(
            f"{args.input} is at {meta.sample_rate} Hz but the model was trained at "
            f"{spec.sample_rate} Hz; resample the file first (e.g. sox in.wav -r "
            f"{spec.sample_rate} out.wav)"
        )
    if meta.channels == 1 and spec.channels == 2 and not args.mono_to_stereo:
        raise CLIError(
            f"{args.input} is mono but the model is stereo; pass --mono-to-stereo to feed it "
            "on both channels"
        )
    if args.overlap is not None and not 0 <= args.overlap < 1:
        raise CLIError(f"--overlap must be in [0, 1), got {args.overlap}")
    wanted, derived = _stem_rules(args.stems, spec.stems)
    out = Path(args.out)
    stem = Path(args.input).stem
    paths = {name: out / f"{stem}_{name}.wav" for name in wanted}
    io.check_output_paths(list(paths.values()), overwrite=args.overwrite, subtype=args.subtype)
    device = resolve_device(args.device)
    if args.checkpoint is not None:
        load_checkpoint(spec.model, args.checkpoint)
    model = spec.model.to(device).eval()
    if args.compile:
        model = torch.compile(model)
    mix, fs = io.load(args.input)
    overlap = args.overlap if args.overlap is not None else (spec.overlap or 0.5)
    batch = args.batch_size or spec.batch_size or 4
    t0 = time.perf_counter()
    with torch.inference_mode():
        stems = separate_song(
            model, mix, chunk_size=spec.chunk_size, overlap=overlap, batch_size=batch,
            device=device, precision=args.precision, progress=None, stem_names=spec.stems,
            derived_stems=derived, mono_to_stereo=args.mono_to_stereo,
            normalize_input=spec.normalize if spec.normalize is not None else True,
        )  # fmt: skip
    for name, path in paths.items():
        io.save(path, stems[name].float().cpu(), fs, subtype=args.subtype,
                overwrite=args.overwrite)  # fmt: skip
    print(
        f"separated {args.input} ({meta.frames / fs:.1f} s) into {', '.join(wanted)} with "
        f"{Path(args.model).name} in {time.perf_counter() - t0:.2f} s -> {out}/"
    )
    return 0


def cmd_separate(args: argparse.Namespace) -> int:
    """Separate a multichannel audio file into one file per source."""
    from torchbss import io
    from torchbss.inference import separate_file
    from torchbss.separators import OnlineSeparator

    if args.out_dir is not None:
        args.out = args.out_dir
    if args.model is not None:
        return cmd_separate_music(args)
    if args.checkpoint is not None and args.method is not None and args.method not in SHIPPED:
        raise CLIError(
            f"--method {args.method} and --checkpoint {args.checkpoint} both name the separator; "
            "give one"
        )
    args.method = args.method or "auxiva"
    for flag in ("stems", "overlap", "batch_size"):
        if getattr(args, flag) is not None:
            raise CLIError(f"--{flag.replace('_', '-')} applies to music models (--model)")
    if args.mono_to_stereo:
        raise CLIError("--mono-to-stereo applies to music models (--model)")
    if args.precision != "float32":
        raise CLIError(
            f"--precision {args.precision} applies to music models (--model); the BSS methods "
            "run in float32 (complex64)"
        )
    meta = io.info(args.input)

    if meta.channels < 2:
        raise CLIError(
            f"{args.input} has {meta.channels} channel; multichannel BSS needs >= 2 mics"
        )
    if (args.ref_mic or 0) >= meta.channels:
        raise CLIError(f"--ref-mic {args.ref_mic} but {args.input} has {meta.channels} channels")
    if args.method in SHIPPED:
        from torchbss.export import PRETRAINED_SAMPLE_RATE

        rate = PRETRAINED_SAMPLE_RATE[args.method]
        if meta.sample_rate != rate:
            raise CLIError(
                f"{args.input} is at {meta.sample_rate} Hz but {args.method} was trained at "
                f"{rate} Hz; resample the file first (e.g. sox in.wav -r {rate} out.wav)"
            )
    if args.n_src is not None and args.n_src > meta.channels:
        raise CLIError(
            f"--n-src {args.n_src} sources need at least as many mics; {args.input} has "
            f"{meta.channels} channels"
        )
    device = resolve_device(args.device)
    wsep = _load_waveform_separator(args, meta.channels, device)
    n_src = wsep.separator.num_sources(meta.channels)
    out = Path(args.out)
    stem = Path(args.input).stem
    paths = [out / f"{stem}_source{k}.wav" for k in range(n_src)]
    image_paths = [out / f"{stem}_source{k}_images.wav" for k in range(n_src)]
    io.check_output_paths(
        paths + (image_paths if args.images else []), overwrite=args.overwrite,
        subtype=args.subtype,
    )  # fmt: skip
    if args.images and wsep.input_domain != "stft":
        raise CLIError("--images needs an STFT-domain separator (the images are per mic STFTs)")
    if args.report is not None:
        _check_report_dir(Path(args.report), args.overwrite, out)
    t0 = time.perf_counter()
    online = isinstance(wsep.separator, OnlineSeparator) and not args.images
    if args.block_seconds is not None and not online:
        raise CLIError(
            "--block-seconds applies to the online methods, which are streamed block by block "
            f"(not with --images); {args.checkpoint or args.method} separates the whole signal"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", io.ClippingWarning)
        if online:  # streamed: flat memory for any length
            separate_file(
                wsep, args.input, paths, block_seconds=args.block_seconds or 10.0,
                subtype=args.subtype, overwrite=args.overwrite, device=device,
            )  # fmt: skip
        else:
            mix, fs = io.load(args.input)
            with torch.inference_mode():
                res = wsep(mix.to(device))
            est = res.sources.cpu()
            for k, path in enumerate(paths):
                io.save(path, est[k : k + 1].float(), fs, subtype=args.subtype,
                        overwrite=args.overwrite)  # fmt: skip
            if args.images:
                _write_images(wsep, res, mix.to(device), image_paths, fs, args)
    for w in caught:
        if issubclass(w.category, io.ClippingWarning):
            print(f"note: {w.message}", file=sys.stderr)
    elapsed = time.perf_counter() - t0
    if args.report is not None:
        page = _write_separation_report(args, paths, elapsed)
        print(f"listening report: {page}")
    how = "streamed" if online else "whole file"
    print(
        f"separated {args.input} ({meta.channels} mics, {meta.frames / meta.sample_rate:.1f} s) "
        f"into {n_src} sources with {args.checkpoint or args.method} ({how}) in "
        f"{elapsed:.2f} s -> {out}/"
    )
    return 0


def _write_images(wsep, res, mix: torch.Tensor, paths: list[Path], fs: int, args) -> None:
    """One multichannel file per source: its image at every mic (they sum to the mixture)."""
    from torchbss import io
    from torchbss.images import result_images

    with torch.inference_mode():
        X = wsep.stft(mix)
        images = wsep.stft.inverse(result_images(res, X), length=mix.shape[-1]).cpu()
    for k, path in enumerate(paths):  # images (sources, mics, samples)
        io.save(path, images[k].float(), fs, subtype=args.subtype, overwrite=args.overwrite)


def _check_report_dir(folder: Path, overwrite: bool, out: Path) -> None:
    """Refuse up front a report folder that the report writer would refuse after the work, or
    whose replacement would delete the separated files (the output folder or one above it)."""
    from torchbss.report import check_report_target

    report, outputs = folder.resolve(), out.resolve()
    if outputs == report or report in outputs.parents:
        raise CLIError(
            f"--report {folder}: the report folder holds the output folder {out}, and writing "
            "the report replaces it; choose a report folder outside the outputs (e.g. "
            f"{out / 'report'})"
        )
    try:
        check_report_target(folder, overwrite)
    except FileExistsError as err:
        raise CLIError(f"--report {folder}: {err}") from None


def _write_separation_report(args: argparse.Namespace, paths: list[Path], elapsed: float) -> Path:
    """The listening report of one separation: mixture, estimates, spectrograms."""
    from torchbss import io
    from torchbss.report import ReportExample, write_report

    mix, fs = io.load(args.input)
    estimates = torch.cat([io.load(p)[0] for p in paths], 0)
    example = ReportExample(Path(args.input).stem, mix, estimates, ref_mic=args.ref_mic or 0)
    method = args.checkpoint or args.method
    rows = [{"file": Path(args.input).name, "method": str(method),
             "sources": estimates.shape[0], "time (s)": round(elapsed, 2)}]  # fmt: skip
    return write_report(args.report, [example], sample_rate=fs, summary_rows=rows,
                        title=f"torchbss separate: {Path(args.input).name} ({method})",
                        overwrite=args.overwrite)  # fmt: skip


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score estimates against references: files of one example, or folders matched by name."""
    import json

    from torchbss import io
    from torchbss.evaluation import evaluate_files, evaluate_folders, write_text_atomic

    options = {"truncate": args.truncate, "ref_mic": args.ref_mic,
               "filter_length": args.filter_length}  # fmt: skip
    outputs = [p for p in (args.output, args.output_csv) if p]
    io.check_output_paths(outputs, overwrite=args.overwrite, audio=False)  # before scoring
    if Path(args.reference).is_dir():
        if len(args.estimates) != 1 or not Path(args.estimates[0]).is_dir():
            raise CLIError(
                "with a folder of references, --estimates takes one folder of estimates "
                f"(got {args.estimates})"
            )
        ev = evaluate_folders(args.estimates[0], args.reference, args.mixture, **options)
    else:
        ev = evaluate_files(args.reference, args.estimates, args.mixture, **options)
    if args.json:
        print(json.dumps(ev.to_dict(), indent=2))
    elif args.csv:
        print(ev.to_csv(), end="")
    else:
        print(ev.table())
    if args.output:
        write_text_atomic(Path(args.output), json.dumps(ev.to_dict(), indent=2))
    if args.output_csv:
        ev.to_csv(args.output_csv)
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    """``benchmark``: run a recipe (Hydra overrides), or ``summarize FOLDER``."""
    try:
        from torchbss import benchmark
    except ImportError as err:
        raise CLIError(
            f"`torchbss benchmark` needs the benchmark extra: pip install 'torchbss[benchmark]' "
            f"({err})"
        ) from None
    if args.overrides[:1] == ["summarize"]:
        p = argparse.ArgumentParser(
            prog="torchbss benchmark summarize",
            description="rebuild the summary (CSV, JSON, Markdown, figures) of a benchmark folder",
        )
        p.add_argument("folder", help="the benchmark folder (out_dir of the run)")
        p.add_argument("--report", action="store_true", help="also write report/index.html")
        p.add_argument("--all", dest="all_results", action="store_true",
                       help="every result file, not only the tasks of the last run")  # fmt: skip
        p.add_argument("--no-plots", dest="plots", action="store_false", help="no figures")
        a = p.parse_args(args.overrides[1:])
        s = benchmark.summarize(a.folder, report=a.report, plots=a.plots, all_results=a.all_results)
        print(s.table())
        print(f"{s.n_ok} finished, {s.n_failed} failed, {s.n_missing} not run; wrote "
              + ", ".join(str(path) for path in s.files.values()))  # fmt: skip
        return 0 if s.n_failed == 0 and s.n_missing == 0 else 1
    return benchmark.run(args.overrides)


def cmd_hydra(args: argparse.Namespace) -> int:
    """``train`` / ``eval``: forward the Hydra overrides to the entry point."""
    try:
        from torchbss.lightning.entry import run
    except ImportError as err:
        raise CLIError(
            f"`torchbss {args.command}` needs the training extra: pip install 'torchbss[train]' "
            f"({err})"
        ) from None
    return run(args.command, args.overrides)


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchbss", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    methods = sorted(METHODS) + sorted(SHIPPED)

    p = sub.add_parser("demo", help="separate a reverberant speech mixture and score it")
    p.add_argument("--out", default="out/demo", help="output folder for the wavs")
    p.add_argument("--data", default=None, help="shared data folder (default: ../shared/data "
                   "when present, else a simulated room)")  # fmt: skip
    p.add_argument(
        "--mixture",
        default=None,
        help="mixture name in <data>/mixtures (default 2x2_00 when the data is there)",
    )
    p.add_argument("--methods", nargs="+", default=["auxiva", "ilrma"], choices=sorted(METHODS))
    p.add_argument("--seed", type=int, default=0, help="room seed when simulating")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("separate", help="separate a multichannel file, or a song into stems")
    p.add_argument("input", help="multichannel .wav/.flac/.ogg file (a song with --model)")
    p.add_argument("out_dir", nargs="?", default=None, help="output folder (same as --out)")
    p.add_argument("--out", default="out/separated", help="output folder")
    p.add_argument("--method", default=None, choices=methods, help="BSS method (default auxiva)")
    p.add_argument("--checkpoint", "--params", dest="checkpoint", default=None,
                   help="an exported trained separator (.pt) instead of --method")  # fmt: skip
    p.add_argument("--n-src", type=_positive_int, default=None,
                   help="number of sources (default: the separator's, i.e. mics)")  # fmt: skip
    p.add_argument("--n-iter", type=_nonnegative_int, default=None,
                   help="iterations of a batch method (default: the method's own)")  # fmt: skip
    p.add_argument("--align", action=argparse.BooleanOptionalAction, default=None,
                   help="batch methods: undo frequency-block permutations after the iterations "
                   "(default: the method's own; on for auxiva and neural-auxiva)")  # fmt: skip
    p.add_argument("--n-fft", type=_positive_int, default=None, help="STFT size (default 2048)")
    p.add_argument("--hop", type=_positive_int, default=None, help="STFT hop (default 512)")
    p.add_argument(
        "--ref-mic",
        type=_nonnegative_int,
        default=None,
        help="reference mic of the output scale (default 0, or a checkpoint's own)",
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--subtype", default="float", help="output sample format: float (default, "
                   "never clipped), int16, int24, ...")  # fmt: skip
    p.add_argument("--block-seconds", type=_positive_float, default=None,
                   help="block length when streaming an online method (default 10)")  # fmt: skip
    music = p.add_argument_group("music models (BS-RoFormer / Mel-RoFormer)")
    music.add_argument(
        "--model",
        default=None,
        help="model config (community MSST .yaml, or .json) of the checkpoint",
    )
    music.add_argument(
        "--stems",
        default=None,
        help="stems to write, e.g. vocals,instrumental (default: the model's)",
    )
    music.add_argument("--batch-size", type=_positive_int, default=None, help="chunks per call")
    music.add_argument("--overlap", type=float, default=None, help="chunk overlap in [0, 1)")
    music.add_argument("--precision", default="float32", choices=("float32", "bf16", "fp16"))
    music.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model (also for --method " + ", ".join(COMPILABLE) + ")",
    )
    music.add_argument(
        "--mono-to-stereo",
        action="store_true",
        help="feed a mono song to a stereo model on both channels",
    )
    p.add_argument(
        "--images",
        action="store_true",
        help="also write each source's image at every mic (<stem>_source<k>_images)",
    )
    p.add_argument("--report", default=None, metavar="DIR",
                   help="also write a listening report (DIR/index.html)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=cmd_separate)

    p = sub.add_parser("evaluate", help="score estimates against reference signals")
    p.add_argument(
        "--reference",
        required=True,
        help="file with one reference per channel, or a folder of references",
    )
    p.add_argument(
        "--estimates",
        required=True,
        nargs="+",
        help="estimate file(s), or one folder of estimates (matched by name)",
    )
    p.add_argument(
        "--mixture",
        default=None,
        help="mixture file (or folder), for the improvements over the mixture",
    )
    p.add_argument("--ref-mic", type=_nonnegative_int, default=0)
    p.add_argument("--filter-length", type=_positive_int, default=512)
    p.add_argument(
        "--truncate",
        action="store_true",
        help="score the common part when lengths differ (else an error)",
    )
    printed = p.add_mutually_exclusive_group()
    printed.add_argument("--json", action="store_true", help="print JSON instead of a table")
    printed.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    p.add_argument("--output", default=None, help="also write the scores as JSON to this file")
    p.add_argument("--output-csv", default=None, help="also write the scores as CSV")
    p.add_argument(
        "--overwrite", action="store_true", help="replace existing --output / --output-csv files"
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "benchmark",
        add_help=False,
        help="run a benchmark recipe (Hydra overrides; see `benchmark --help`)",
    )
    p.add_argument("overrides", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_benchmark)

    for name, text in (("train", "train a model (Hydra overrides, e.g. experiment=neural_auxiva)"),
                       ("eval", "evaluate a trained model (Hydra overrides)")):  # fmt: skip
        p = sub.add_parser(name, help=text, add_help=False)
        p.add_argument("overrides", nargs=argparse.REMAINDER,
                       help="Hydra overrides and flags (--help, -m, --cfg job)")  # fmt: skip
        p.set_defaults(func=cmd_hydra)
    return parser


USER_ERRORS = (
    CLIError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    ValueError,
    TypeError,
    ImportError,
    OSError,
)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for user errors)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("train", "eval", "benchmark"):  # everything after is Hydra's
        func = cmd_benchmark if argv[0] == "benchmark" else cmd_hydra
        args = argparse.Namespace(command=argv[0], overrides=argv[1:], func=func)
    else:
        args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
