"""Data sources of the benchmark engine: one registry over the dataset adapters.

A recipe's ``data`` node names a source and its arguments::

    data:
      source: wav_folder            # a name of SOURCES
      root: ${data_dir}/mixtures
      include: "2x2_*"
      items: null                   # every example (or a list of names)
      max_seconds: null             # crop every example to its first seconds (quick runs)

Every source lists its examples by name (:meth:`DataSource.items`) and loads one by name
(:meth:`DataSource.load`) as an :class:`Example`: the mixture ``(mics, samples)``, the
references ``(sources, samples)`` (the source images at the reference mic) and the sample rate.
The sources wrap the datasets of :mod:`torchbss.data`:

* ``wav_folder``: :class:`~torchbss.data.WavFolderDataset` (``<name>_mix.flac`` +
  ``<name>_ref.flac``, the ``shared/data/mixtures`` layout); examples of different layouts
  (2x2, 3x3, 2 sources on 4 mics) may share a folder;
* ``stem_folder``: :class:`~torchbss.data.StemFolderDataset` (MUSDB18 layout, one folder per
  track); the references are the target stems at channel ``ref_channel``;
* ``simulated``: :class:`~torchbss.data.DynamicMixingDataset` (reverberant rooms simulated from
  dry speech; ``root: null`` uses the two utterances bundled with torchbss, so it runs
  anywhere).

:func:`register_source` adds a source (any callable taking the node's arguments and returning a
:class:`DataSource`).
"""

from __future__ import annotations

import glob
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "Example",
    "DataSource",
    "WavFolderSource",
    "StemFolderSource",
    "SimulatedSource",
    "SOURCES",
    "register_source",
    "build_source",
    "resolve_data_node",
]


@dataclass
class Example:
    """One benchmark example.

    Attributes:
        mixture: ``(mics, samples)`` float32 mixture.
        reference: ``(sources, samples)`` float32 references (source images at the reference
            mic).
        sample_rate: Hz.
        source_names: optional names of the references.
    """

    mixture: torch.Tensor
    reference: torch.Tensor
    sample_rate: int
    source_names: list[str] | None = None


class DataSource:
    """A named collection of examples (see the module docstring)."""

    def items(self) -> list[str]:
        """Names of the examples, in a fixed order."""
        raise NotImplementedError

    def load(self, item: str) -> Example:
        """The example called ``item``."""
        raise NotImplementedError


def _index(names: Sequence[str], item: str, where: str) -> int:
    try:
        return list(names).index(item)
    except ValueError:
        shown = list(names)[:20]
        more = f" (and {len(names) - 20} more)" if len(names) > 20 else ""
        raise ValueError(f"no example {item!r} in {where}; it has {shown}{more}") from None


class WavFolderSource(DataSource):
    """Examples stored as ``<name><mixture_suffix>`` + ``<name><reference_suffix>`` files.

    Args:
        root: the folder.
        include: glob pattern on ``<name>`` (e.g. ``"2x2_*"``).
        mixture_suffix, reference_suffix: file endings of the two files of an example.
    """

    def __init__(
        self,
        root: str,
        include: str = "*",
        mixture_suffix: str = "_mix.flac",
        reference_suffix: str = "_ref.flac",
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"wav_folder: folder not found: {str(self.root)!r}")
        self.mixture_suffix, self.reference_suffix = mixture_suffix, reference_suffix
        paths = sorted(self.root.glob(include + mixture_suffix))
        self.names = [p.name[: -len(mixture_suffix)] for p in paths if p.is_file()]
        if not self.names:
            raise ValueError(
                f"wav_folder: no mixture files matching {include + mixture_suffix!r} in "
                f"{str(self.root)!r}"
            )

    def items(self) -> list[str]:
        return list(self.names)

    def load(self, item: str) -> Example:
        from torchbss.data import WavFolderDataset

        _index(self.names, item, f"wav_folder {str(self.root)!r}")
        # one dataset per example, so that examples of different layouts can share a folder
        ds = WavFolderDataset(
            self.root,
            include=glob.escape(item),
            mixture_suffix=self.mixture_suffix,
            reference_suffix=self.reference_suffix,
            segment_s=None,
            random_chunks=False,
        )
        ex = ds[0]
        return Example(ex["mixture"], ex["reference"], ds.sample_rate)


class StemFolderSource(DataSource):
    """MUSDB18-style tracks (one folder per track, one file per stem).

    Args:
        root: folder of track folders.
        stems: the stems that make the mixture.
        targets: the stems used as references (default: all of ``stems``).
        mixture_from_stems: mixture = sum of ``stems`` (else the ``mixture`` file).
        extension: file extension of the stems.
        segment_s: cut every track into consecutive windows of this length (``None``: whole
            tracks).
        ref_channel: channel of the stems used as references (the reference mic).
        tracks: only these tracks.
    """

    def __init__(
        self,
        root: str,
        stems: Sequence[str] = ("bass", "drums", "other", "vocals"),
        targets: Sequence[str] | None = None,
        mixture_from_stems: bool = True,
        extension: str = ".wav",
        segment_s: float | None = None,
        ref_channel: int = 0,
        tracks: Sequence[str] | None = None,
    ) -> None:
        from torchbss.data import StemFolderDataset

        self.dataset = StemFolderDataset(
            root,
            stems=list(stems),
            targets=None if targets is None else list(targets),
            mixture_from_stems=mixture_from_stems,
            extension=extension,
            segment_s=segment_s,
            random_chunks=False,
            tracks=None if tracks is None else list(tracks),
        )
        self.ref_channel = int(ref_channel)
        if not 0 <= self.ref_channel < self.dataset.channels:
            raise ValueError(
                f"stem_folder: ref_channel must be in [0, {self.dataset.channels}), got "
                f"{ref_channel}"
            )
        ds = self.dataset
        if ds.segment is None:
            self.names = [ds.tracks[t] for t, _ in ds._windows]
        else:
            self.names = [f"{ds.tracks[t]}@{s / ds.sample_rate:g}s" for t, s in ds._windows]

    def items(self) -> list[str]:
        return list(self.names)

    def load(self, item: str) -> Example:
        ex = self.dataset[_index(self.names, item, f"stem_folder {str(self.dataset.root)!r}")]
        reference = ex["reference"][:, self.ref_channel]  # (targets, samples)
        return Example(
            ex["mixture"], reference, self.dataset.sample_rate, list(self.dataset.targets)
        )


class SimulatedSource(DataSource):
    """Reverberant speech mixtures simulated from dry utterances (dynamic mixing, fixed seed).

    Args:
        root: folder of dry utterances (``None``: the two utterances bundled with torchbss).
        n_items: number of examples (``room000``, ``room001``, ...).
        seconds: length of every example.
        seed: seed of the examples (example ``i`` is a function of ``seed`` and ``i``).
        split: speaker split of ``root`` (see :class:`~torchbss.data.DynamicMixingDataset`).
        **kwargs: further arguments of :class:`~torchbss.data.DynamicMixingDataset` (``n_sources``,
            ``n_mics``, ``rt60``, ``snr_db``, ``mic_spacing``, ...).
    """

    def __init__(
        self,
        root: str | None = None,
        n_items: int = 4,
        seconds: float = 4.0,
        seed: int = 0,
        split: str = "test",
        **kwargs: Any,
    ) -> None:
        from torchbss.data import DynamicMixingDataset, bundled_speech_files

        if isinstance(n_items, bool) or not isinstance(n_items, int) or n_items < 1:
            raise ValueError(f"simulated: n_items must be an integer >= 1, got {n_items!r}")
        if root is None:
            files = bundled_speech_files()
            root = str(files[0].parent)
            kwargs.setdefault("speakers", [f.stem for f in files])
        kwargs.setdefault("cache_audio", True)
        self.dataset = DynamicMixingDataset(
            root, split=split, segment_s=seconds, length=n_items, seed=seed, **kwargs
        )
        self.names = [f"room{i:03d}" for i in range(n_items)]

    def items(self) -> list[str]:
        return list(self.names)

    def load(self, item: str) -> Example:
        ex = self.dataset[_index(self.names, item, "the simulated rooms")]
        return Example(ex["mixture"], ex["reference"], self.dataset.sample_rate)


#: ``data.source`` names and the callables that build them.
SOURCES: dict[str, Callable[..., DataSource]] = {
    "wav_folder": WavFolderSource,
    "stem_folder": StemFolderSource,
    "simulated": SimulatedSource,
}

#: arguments every source node may have, handled here (not by the source)
COMMON = ("source", "items", "max_seconds")
#: node arguments that are folders (made absolute, so that a task's key does not depend on the
#: working directory)
PATH_ARGS = ("root",)


def register_source(name: str, factory: Callable[..., DataSource]) -> None:
    """Make ``data.source: name`` build ``factory(**arguments)``.

    Args:
        name: the registry name.
        factory: a callable returning a :class:`DataSource`.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a source name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable, got {type(factory).__name__}")
    SOURCES[name] = factory


def resolve_data_node(node: Mapping[str, Any]) -> dict[str, Any]:
    """Check a ``data`` node and make its folder arguments absolute.

    Raises:
        ValueError: no ``source``, or an unknown one (the message lists the known sources).
    """
    if not isinstance(node, Mapping):
        raise ValueError(f"data must be a mapping with a 'source', got {node!r}")
    node = dict(node)
    name = node.get("source")
    if name not in SOURCES:
        raise ValueError(
            f"unknown data source {name!r}; known sources: {sorted(SOURCES)} "
            "(data.source, see torchbss.benchmark.register_source)"
        )
    for key in PATH_ARGS:
        if node.get(key) is not None:
            node[key] = str(Path(str(node[key])).expanduser().resolve())
    max_seconds = node.get("max_seconds")
    if max_seconds is not None and not (
        isinstance(max_seconds, (int, float))
        and not isinstance(max_seconds, bool)
        and max_seconds > 0
    ):
        raise ValueError(f"data.max_seconds must be a number > 0 or null, got {max_seconds!r}")
    items = node.get("items")
    if items is not None and (isinstance(items, str) or not isinstance(items, Sequence)):
        raise ValueError(f"data.items must be a list of example names or null, got {items!r}")
    if items is not None and not items:
        raise ValueError("data.items is empty: give example names, or null for all of them")
    if items is not None:
        twice = sorted({str(i) for i in items if list(items).count(i) > 1})
        if twice:  # each would be run and counted twice in the means
            raise ValueError(f"data.items lists {twice} more than once")
    return node


class _Selected(DataSource):
    """A source restricted to some items and cropped to ``max_seconds``."""

    def __init__(self, inner: DataSource, items: Sequence[str] | None, max_seconds: float | None):
        self.inner = inner
        names = inner.items()
        if items is not None:
            unknown = [i for i in items if i not in names]
            if unknown:
                raise ValueError(
                    f"data.items {unknown} are not examples of the source; it has {names[:20]}"
                )
            names = [str(i) for i in items]
        self.names = names
        self.max_seconds = max_seconds

    def items(self) -> list[str]:
        return list(self.names)

    def load(self, item: str) -> Example:
        _index(self.names, item, "the selected examples")
        ex = self.inner.load(item)
        if self.max_seconds is not None:
            n = max(1, int(round(self.max_seconds * ex.sample_rate)))
            ex = Example(
                ex.mixture[..., :n], ex.reference[..., :n], ex.sample_rate, ex.source_names
            )
        return ex


def build_source(node: Mapping[str, Any]) -> DataSource:
    """Build the source of a ``data`` node (see the module docstring).

    Raises:
        ValueError: unknown source (lists the known ones), bad arguments, unknown items.
        TypeError: arguments the source does not take.
    """
    node = resolve_data_node(node)
    return _build_cached(json.dumps(node, sort_keys=True))


@lru_cache(maxsize=8)
def _build_cached(text: str) -> DataSource:
    node = json.loads(text)
    name = node["source"]
    args = {k: v for k, v in node.items() if k not in COMMON}
    try:
        inner = SOURCES[name](**args)
    except TypeError as err:
        raise TypeError(f"data source {name!r}: {err}") from None
    return _Selected(inner, node.get("items"), node.get("max_seconds"))
