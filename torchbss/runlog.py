"""Run logs: per-iteration (batch) or per-block (online) records, written as JSON Lines.

A *record* is one flat JSON object per line::

    {"index": 3, "iteration": 3, "time_s": 0.412, "cost": -51.7,
     "si_sdr": [8.1, 6.9], "si_sdr_mean": 7.5, "permutation": [1, 0]}

* ``index``: number of the record (0, 1, ...); ``iteration``: the index the separator passed to
  its callback (the iteration of a batch separator, the step of an online one);
* ``time_s``: seconds spent by the separator since the recorder started, *without* the time the
  recorder itself took (computing SI-SDR is not charged to the method);
* ``cost``: the separator's cost after that iteration, when the result carries one (see
  :meth:`RunRecorder.finish` to fill it in from the final result otherwise);
* with references: ``si_sdr`` (dB, per reference, with the best permutation ``permutation``)
  and its mean ``si_sdr_mean``; for online separators also ``samples`` ``[start, end)``, the
  output samples the block completed and that the SI-SDR was measured on;
* any constant ``fields`` given to :func:`record` (e.g. the method name).

:func:`record` makes a callback for any separator of the contract (``callback=`` of a batch
separator's ``forward``; call it yourself after each ``step`` of an online separator).
:func:`write_run_log` / :func:`read_run_log` write and read the files; :class:`RunLogWriter`
appends one record at a time and flushes it, so a run that is killed keeps what it logged.
NaN and infinite numbers are written as ``null`` (strict JSON).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Mapping, MutableSequence
from pathlib import Path
from typing import Any

import torch

from torchbss._validation import check_real_float, check_tensor

__all__ = [
    "record",
    "RunRecorder",
    "RunLogWriter",
    "write_run_log",
    "read_run_log",
    "to_json_value",
]


def to_json_value(value: Any) -> Any:
    """Plain JSON value of ``value``: tensors and numpy values become (nested) lists/numbers,
    NaN and inf become ``None``, mappings and sequences are converted recursively."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = value.item() if value.ndim == 0 else value.tolist()
    elif hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        out = {str(k): to_json_value(v) for k, v in value.items()}
        if len(out) != len(value):  # e.g. 1 and "1": one of them was dropped
            raise ValueError(f"keys {list(value)} collide as text; a run log keys by strings")
        return out
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    raise TypeError(
        f"cannot write a {type(value).__name__} to a run log; use numbers, strings, lists, "
        "dicts or tensors"
    )


def _line(record: Mapping[str, Any]) -> str:
    if not isinstance(record, Mapping):
        raise TypeError(f"a run-log record must be a mapping, got {type(record).__name__}")
    return json.dumps(to_json_value(record), allow_nan=False, separators=(",", ":"))


def _open_target(path: Path, append: bool, overwrite: bool) -> None:
    if path.is_dir():
        raise IsADirectoryError(f"run log {str(path)!r} is an existing folder, not a file")
    if path.exists() and not (append or overwrite):
        raise FileExistsError(
            f"run log {str(path)!r} already exists; pass append=True to add to it or "
            "overwrite=True to replace it"
        )
    path.parent.mkdir(parents=True, exist_ok=True)


#: the keys of a record that the recorder measures (``fields`` may not use them)
_MEASURED = frozenset(
    {"index", "iteration", "time_s", "cost", "samples", "si_sdr", "si_sdr_mean", "permutation"}
)


class RunLogWriter:
    """Append records to a JSON-Lines file, one flushed line per record.

    Args:
        path: the ``.jsonl`` file (parent folders are created).
        append: add to an existing file.
        overwrite: replace an existing file (without ``append`` or ``overwrite`` an existing
            file is refused).

    Example:
        >>> import tempfile
        >>> path = tempfile.mkdtemp() + "/run.jsonl"
        >>> with RunLogWriter(path) as log:
        ...     log.write({"iteration": 0, "cost": 1.5})
        >>> read_run_log(path)
        [{'iteration': 0, 'cost': 1.5}]
    """

    def __init__(
        self, path: str | os.PathLike, *, append: bool = False, overwrite: bool = False
    ) -> None:
        self.path = Path(path)
        _open_target(self.path, append, overwrite)
        self._file = open(self.path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115

    def write(self, record: Mapping[str, Any]) -> None:
        """Write one record as a line and flush it."""
        self._file.write(_line(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file (further writes raise)."""
        self._file.close()

    def __enter__(self) -> RunLogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_run_log(
    path: str | os.PathLike,
    records: Iterable[Mapping[str, Any]],
    *,
    append: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write records to a JSON-Lines file (atomically, unless appending).

    Args:
        path: the ``.jsonl`` file.
        records: mappings of JSON-able values (tensors are converted, NaN becomes ``null``).
        append: add to an existing file.
        overwrite: replace an existing file.

    Returns:
        The path written.
    """
    path = Path(path)
    _open_target(path, append, overwrite)
    lines = "".join(_line(r) + "\n" for r in records)
    if append:
        with open(path, "a", encoding="utf-8") as f:
            f.write(lines)
        return path
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(lines, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _refuse_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not JSON (a run log writes null)", name, 0)


def read_run_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a JSON-Lines run log.

    Args:
        path: a file written by :class:`RunLogWriter` or :func:`write_run_log` (blank lines are
            ignored).

    Returns:
        The records, in file order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line that is not a JSON object (the message names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"run log not found: {str(path)!r}")
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:  # strict: NaN / Infinity are not JSON (the writer writes null)
                value = json.loads(line, parse_constant=_refuse_constant)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{str(path)!r} line {number} is not valid JSON ({err.msg}); a run log has "
                    "one JSON object per line (a truncated last line means the run was killed "
                    "while writing it)"
                ) from None
            if not isinstance(value, dict):
                raise ValueError(
                    f"{str(path)!r} line {number} is a JSON {type(value).__name__}, expected an "
                    "object (one record per line)"
                )
            records.append(value)
    return records


def _stft_of(stft: Any):
    from torchbss.signal.stft import STFT

    if isinstance(stft, STFT):
        return stft
    inner = getattr(stft, "stft", None)  # e.g. a WaveformSeparator
    if isinstance(inner, STFT):
        return inner
    raise TypeError(
        "stft must be the torchbss.STFT that made the separator's input (or a "
        f"WaveformSeparator holding it), got {type(stft).__name__}"
    )


class RunRecorder:
    """Callback ``recorder(index, result)`` that turns intermediate results into records.

    Made by :func:`record` (see there for the arguments). Attributes: ``records`` (the list of
    records so far, also when writing to a file), ``overhead_s`` (seconds spent inside the
    recorder, excluded from ``time_s``).
    """

    def __init__(
        self,
        target: str | os.PathLike | MutableSequence | None,
        references: torch.Tensor | None,
        stft: Any,
        fields: Mapping[str, Any] | None,
        every: int,
        overwrite: bool,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        self.every = every
        self.fields = dict(to_json_value(dict(fields or {})))
        clash = sorted(set(self.fields) & _MEASURED)
        if clash:  # they replaced the measured values (and finish() placed costs by them)
            raise ValueError(
                f"fields {clash} are written by the recorder itself; use other names "
                f"(it writes {sorted(_MEASURED)})"
            )
        self.references = None
        self.stft = None
        if references is not None:
            check_tensor(references, "references", min_ndim=2, layout="(..., sources, samples)")
            check_real_float(references, "references")
            if stft is None:
                raise ValueError(
                    "references are waveforms (..., sources, samples): pass stft= (the STFT that "
                    "made the separator's input) so that the estimates can be compared with them"
                )
            self.references = references.detach()
            self.stft = _stft_of(stft)
        self.records: list[dict[str, Any]] = (
            [] if not isinstance(target, MutableSequence) else target
        )
        self._writer = None
        self.path = None
        if target is not None and not isinstance(target, MutableSequence):
            self.path = Path(target)
            self._writer = RunLogWriter(self.path, overwrite=overwrite)
        self._calls = 0
        self._stream = None  # online: streaming synthesis state
        self.start()

    def start(self) -> None:
        """Restart the clock (call just before the separator runs)."""
        self._t0 = time.perf_counter()
        self.overhead_s = 0.0

    def __call__(self, index: int, result: Any) -> None:
        entered = time.perf_counter()
        elapsed = entered - self._t0 - self.overhead_s
        call = self._calls
        self._calls += 1
        online = isinstance(getattr(result, "state", None), dict)
        if call % self.every == 0 or online:
            rec: dict[str, Any] = {"index": len(self.records), "iteration": int(index)}
            rec["time_s"] = elapsed
            cost = getattr(result, "cost", None)
            if cost is not None:
                rec["cost"] = to_json_value(cost[..., -1])
            if self.references is not None:
                with torch.no_grad():
                    rec.update(self._scores(result, online))
            rec.update(self.fields)
            if call % self.every == 0:
                self._emit(rec)
        self.overhead_s += time.perf_counter() - entered

    def _emit(self, rec: dict[str, Any]) -> None:
        self.records.append(rec)
        if self._writer is not None:
            self._writer.write(rec)

    def _scores(self, result: Any, online: bool) -> dict[str, Any]:
        from torchbss.metrics import permutation_invariant_score, si_sdr

        sources = result.sources.detach()
        ref = self.references.to(sources.device)
        length = ref.shape[-1]
        if not online:
            from torchbss.signal.stft import num_frames

            expected = num_frames(length, self.stft.n_fft, self.stft.hop_length)
            if sources.shape[-1] != expected:
                raise ValueError(
                    f"the references have {length} samples ({expected} frames with n_fft="
                    f"{self.stft.n_fft}, hop_length={self.stft.hop_length}) but the separator's "
                    f"sources have {sources.shape[-1]} frames: pass the references of the signal "
                    "that was separated, and the STFT that made its input"
                )
            estimate = self.stft.inverse(sources, length=length)
            out: dict[str, Any] = {}
        else:
            from torchbss.signal.streaming import StreamingSTFT

            if self._stream is None:
                streaming = StreamingSTFT(self.stft)
                self._stream = [streaming, streaming.init_synthesis(sources), 0]
            streaming, state, start = self._stream
            estimate, state = streaming.synthesize(sources, state, length=length)
            end = start + estimate.shape[-1]
            self._stream = [streaming, state, end]
            ref = ref[..., start:end]
            out = {"samples": [start, end]}
            if end == start:
                return {**out, "si_sdr": None, "si_sdr_mean": None, "permutation": None}
        if estimate.shape[:-2] != ref.shape[:-2] or estimate.shape[-2] < ref.shape[-2]:
            raise ValueError(
                f"the separator's sources {tuple(estimate.shape)} (..., sources, samples) do not "
                f"match the references {tuple(ref.shape)}: same leading dimensions and at least "
                "as many sources are needed"
            )
        dtype = torch.promote_types(ref.dtype, estimate.dtype)
        score = permutation_invariant_score(si_sdr, ref.to(dtype), estimate.to(dtype))
        values = score.values
        finite = values[torch.isfinite(values)]
        mean = float(finite.mean()) if finite.numel() else None
        return {
            **out,
            "si_sdr": to_json_value(values),
            "si_sdr_mean": mean,
            "permutation": to_json_value(score.permutation),
        }

    def finish(self, result: Any = None) -> list[dict[str, Any]]:
        """End the run: fill in missing costs from the final result, close the file.

        Batch separators pass their intermediate results without the cost; the final result
        holds the cost before the first and after every iteration (``(..., n_iter + 1)``), so
        the record of iteration ``i`` gets ``cost[..., i + 1]``. The file is rewritten when a
        cost was filled in.

        Args:
            result: the separator's final result (or ``None``).

        Returns:
            The records.
        """
        cost = getattr(result, "cost", None)
        changed = False
        if cost is not None:
            for rec in self.records:
                i = rec.get("iteration")
                if "cost" not in rec and isinstance(i, int) and 0 <= i + 1 < cost.shape[-1]:
                    rec["cost"] = to_json_value(cost[..., i + 1])
                    changed = True
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            if changed:
                write_run_log(self.path, self.records, overwrite=True)
        return self.records


def record(
    target: str | os.PathLike | MutableSequence | None = None,
    references: torch.Tensor | None = None,
    stft: Any = None,
    *,
    fields: Mapping[str, Any] | None = None,
    every: int = 1,
    overwrite: bool = False,
) -> RunRecorder:
    """A callback that records cost, time and (with references) SI-SDR of every iteration/block.

    Batch separators: pass it as ``callback=`` (``AuxIVA()(X, callback=rec)``), then call
    ``rec.finish(result)`` to add the costs. Online separators: call ``rec(i, res)`` after each
    ``step`` (block ``i``); the SI-SDR of a block is measured on the output samples that block
    completed (exactly the samples a streaming inverse STFT emits for it).

    Args:
        target: a path (a new ``.jsonl`` file, one flushed line per record), a list (records are
            appended to it) or ``None`` (only ``recorder.records``).
        references: ``(..., sources, samples)`` reference waveforms (e.g. source images at the
            reference mic) for SI-SDR; the best permutation is found at every record.
        stft: the :class:`~torchbss.STFT` that made the separator's input (or a
            :class:`~torchbss.inference.WaveformSeparator`); needed with ``references``.
        fields: constant fields added to every record (e.g. ``{"method": "auxiva"}``).
        every: record every ``every``-th call of a batch separator (every block of an online
            one is scored, to follow its output, but also written only every ``every``-th).
        overwrite: replace an existing ``target`` file.

    Returns:
        A :class:`RunRecorder`; its clock starts now (``recorder.start()`` restarts it).

    Example:
        >>> from torchbss import AuxIVA
        >>> X = torch.randn(2, 65, 50, dtype=torch.complex128)
        >>> log = []
        >>> rec = record(log)
        >>> res = AuxIVA(n_iter=3)(X, callback=rec)
        >>> [r["iteration"] for r in rec.finish(res)], "cost" in log[-1]
        ([0, 1, 2], True)
    """
    return RunRecorder(target, references, stft, fields, every, overwrite)
