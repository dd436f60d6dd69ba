"""Lightning data modules: any torchbss dataset (or yours) for train / val / test.

:class:`SeparationDataModule` takes its datasets in one of two config-friendly ways:

* ready-made objects (``train=WavFolderDataset(...)``), which is what Hydra's recursive
  ``instantiate`` builds from nodes with a ``_target_``;
* a dataset *factory* (``dataset``: a class or a ``functools.partial``, i.e. a Hydra node with
  ``_partial_: true`` that holds the arguments every split shares) and, per split, a mapping
  of the arguments that differ (``train={"split": "train", "length": 2000}``).

The second form keeps a dynamic-mixing config short (the room, array and speech arguments are
written once) and builds the datasets in :meth:`setup`, not when the config is instantiated.

Training batches use :class:`~torchbss.data.datasets.EpochSampler`: with a dataset whose
indices past ``len`` give new examples (``fresh_indices``: dynamic mixing, random chunks) every
epoch sees new mixtures, and every example is a function of ``(dataset seed, epoch, index)``,
whatever the number of workers. Lightning shards it across processes under DDP.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from torchbss.data.datasets import EpochSampler

try:
    import lightning.pytorch as pl
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "torchbss.lightning needs the 'lightning' package: pip install 'torchbss[train]'"
    ) from err

__all__ = ["SeparationDataModule", "DynamicMixingDataModule", "pad_collate", "COLLATES"]

SPLITS = ("train", "val", "test")


def pad_collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch examples whose ``mixture``/``reference`` lengths differ: zero-pad them at the end
    to the longest, and add ``length (batch,)`` (samples before padding)."""
    lengths = torch.tensor([int(e["mixture"].shape[-1]) for e in examples])
    n = int(lengths.max())
    padded = []
    for e in examples:
        e = dict(e)
        for key in ("mixture", "reference"):
            if key in e:
                e[key] = torch.nn.functional.pad(e[key], (0, n - e[key].shape[-1]))
        padded.append(e)
    batch = default_collate(padded)
    batch["length"] = lengths
    return batch


#: the ``collate`` choices of :class:`SeparationDataModule`
COLLATES: dict[str, Callable] = {"stack": default_collate, "pad": pad_collate}


def _worker_init(_: int) -> None:
    # each worker simulates on one thread: N workers must not fight over the cores
    torch.set_num_threads(1)


def _accepts(factory: Callable, name: str) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class SeparationDataModule(pl.LightningDataModule):
    """Train / val / test loaders over any map-style datasets.

    Args:
        train, val, test: a ``Dataset``; or, with ``dataset``, a mapping of the arguments of
            that split (``{}`` for none); or ``None`` (no such loader).
        dataset: factory called as ``dataset(**split_arguments)`` (a class or a partial);
            ``seed`` is passed too when the factory takes it and the split does not set it.
        batch_size: training batch size.
        eval_batch_size: validation/test batch size (default ``batch_size``).
        num_workers: loader worker processes (each runs with one torch thread).
        seed: seed of the training order (and of factory-built datasets, see ``dataset``).
        shuffle: shuffle the training examples of each epoch.
        fresh_examples: new training examples every epoch when the dataset supports it
            (``dataset.fresh_indices``); otherwise the same ``len`` examples every epoch.
        collate: ``"stack"`` (equal lengths) or ``"pad"`` (:func:`pad_collate`).
        drop_last: drop the last incomplete training batch.
        pin_memory, persistent_workers: passed to the ``DataLoader``.
        train_extra: more training sets, by name, given like ``train`` (e.g. mixtures of
            another source count, whose batches cannot be stacked with the main ones). Every
            training step then gets one batch of each (Lightning's ``CombinedLoader``,
            ``max_size_cycle``): ``{"train": batch, name: batch, ...}``, and
            :class:`~torchbss.lightning.SeparationModule` averages their losses.

    Example:
        >>> from functools import partial
        >>> from torchbss.data.dynamic_mixing import DynamicMixingDataset
        >>> dm = SeparationDataModule(  # doctest: +SKIP
        ...     dataset=partial(DynamicMixingDataset, "shared/data/speech", n_sources=2),
        ...     train={"split": "train", "length": 800}, val={"split": "val", "length": 32},
        ...     batch_size=8, num_workers=2)
        >>> dm.setup("fit"); next(iter(dm.train_dataloader()))["mixture"].shape  # doctest: +SKIP
        torch.Size([8, 2, 64000])
    """

    def __init__(
        self,
        train: Dataset | Mapping[str, Any] | None = None,
        val: Dataset | Mapping[str, Any] | None = None,
        test: Dataset | Mapping[str, Any] | None = None,
        *,
        dataset: Callable[..., Dataset] | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        fresh_examples: bool = True,
        collate: str = "stack",
        drop_last: bool = True,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        train_extra: Mapping[str, Dataset | Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
        if collate not in COLLATES:
            raise ValueError(f"collate must be one of {sorted(COLLATES)}, got {collate!r}")
        if dataset is not None and not callable(dataset):
            raise TypeError(
                f"dataset must be a dataset class or partial (a Hydra node with "
                f"'_partial_: true'), got {type(dataset).__name__}"
            )
        self._specs = {"train": train, "val": val, "test": test}
        extra = dict(train_extra or {})
        for name in extra:
            if name in SPLITS:
                raise ValueError(f"train_extra names must differ from {SPLITS}, got {name!r}")
            if extra[name] is None:
                raise ValueError(f"train_extra[{name!r}] is None; remove it or give a dataset")
        if extra and train is None:
            raise ValueError("train_extra needs a main train dataset too")
        self._specs.update(extra)
        self.extra_names = tuple(str(name) for name in extra)
        for split, spec in self._specs.items():
            if isinstance(spec, Mapping) and dataset is None:
                raise ValueError(
                    f"{split} is a mapping of arguments ({dict(spec)}) but no 'dataset' "
                    f"factory was given to build it; pass dataset=<class or partial>, or a "
                    f"Dataset object as {split}"
                )
            if spec is not None and not (
                isinstance(spec, Mapping)
                or (hasattr(spec, "__getitem__") and hasattr(spec, "__len__"))
            ):
                raise TypeError(
                    f"{split} must be a map-style dataset, a mapping of dataset arguments or "
                    f"None, got {type(spec).__name__}"
                )
        self.factory = dataset
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = int(seed)
        self.shuffle = shuffle
        self.fresh_examples = fresh_examples
        self.collate = collate
        self.drop_last = drop_last
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.datasets: dict[str, Dataset | None] = {s: None for s in self._specs}

    def has_split(self, split: str) -> bool:
        """Whether a ``split`` dataset ("train", "val", "test") is configured."""
        return self._specs.get(split) is not None

    def _build(self, split: str) -> Dataset | None:
        if self.datasets[split] is None:
            spec = self._specs[split]
            if isinstance(spec, Mapping):
                kwargs = {str(k): v for k, v in spec.items()}
                if "seed" not in kwargs and _accepts(self.factory, "seed"):
                    kwargs["seed"] = self.seed
                spec = self.factory(**kwargs)
            self.datasets[split] = spec
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets the stage needs (``fit``: train + val, ``validate``: val,
        ``test``: test, ``None``: all)."""
        fit = ("train", *self.extra_names, "val")
        needs = {"fit": fit, "validate": ("val",), "test": ("test",)}
        for split in needs.get(stage or "", tuple(self._specs)):
            self._build(split)

    def _loader(self, split: str, **kwargs: Any) -> DataLoader:
        ds = self._build(split)
        if ds is None:
            raise ValueError(f"no {split} dataset was configured for this data module")
        return DataLoader(
            ds,
            num_workers=self.num_workers,
            collate_fn=COLLATES[self.collate],
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            worker_init_fn=_worker_init if self.num_workers > 0 else None,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader | dict[str, DataLoader]:
        """Shuffled batches of ``batch_size``; new examples each epoch (see the class doc).
        With ``train_extra``: a dict of loaders, ``"train"`` first."""
        if self.extra_names:
            return {name: self._train_loader(name) for name in ("train", *self.extra_names)}
        return self._train_loader("train")

    def _train_loader(self, split: str) -> DataLoader:
        ds = self._build(split)
        fresh = self.fresh_examples and bool(getattr(ds, "fresh_indices", False))
        size = len(ds) if ds is not None else 1
        trainer = getattr(self, "trainer", None)
        replicas = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        if ds is not None and self.drop_last and size // replicas < self.batch_size:
            raise ValueError(
                f"the {split} set has {size} example(s) per epoch: {size // replicas} per process "
                f"with {replicas} process(es), fewer than one batch of batch_size="
                f"{self.batch_size}, so no training step would run; raise data.{split}.length "
                "or lower data.batch_size"
            )
        sampler = EpochSampler(size, shuffle=self.shuffle, seed=self.seed, fresh=fresh,
                               num_replicas=replicas, rank=rank)  # fmt: skip
        return self._loader(
            split, batch_size=self.batch_size, sampler=sampler, drop_last=self.drop_last
        )

    def val_dataloader(self) -> DataLoader:
        """The validation examples in order (the same every epoch)."""
        return self._loader("val", batch_size=self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """The test examples in order."""
        return self._loader("test", batch_size=self.eval_batch_size, shuffle=False)

    def __repr__(self) -> str:
        built = {s: repr(d) for s, d in self.datasets.items() if d is not None}
        return (
            f"{type(self).__name__}(batch_size={self.batch_size}, num_workers="
            f"{self.num_workers}, seed={self.seed}, datasets={built})"
        )


class DynamicMixingDataModule(SeparationDataModule):
    """:class:`SeparationDataModule` of :class:`~torchbss.data.dynamic_mixing.DynamicMixingDataset`
    train / val / test splits (by speaker) of one speech folder, for use without Hydra.

    Args:
        root: folder of dry utterances.
        train_length, val_length, test_length: examples per epoch of each split (0: no such
            loader).
        batch_size, eval_batch_size, num_workers, seed, **loader options: see
            :class:`SeparationDataModule`.
        **dataset_kwargs: arguments of every split's dataset (``n_sources``, ``n_mics``,
            ``rt60``, ``snr_db``, ``segment_s``, ...).
    """

    def __init__(
        self,
        root: str,
        *,
        train_length: int = 1000,
        val_length: int = 64,
        test_length: int = 64,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        fresh_examples: bool = True,
        drop_last: bool = True,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        **dataset_kwargs: Any,
    ) -> None:
        from functools import partial

        from torchbss.data.dynamic_mixing import DynamicMixingDataset

        def split(name: str, length: int) -> dict[str, Any] | None:
            return {"split": name, "length": length} if length else None

        super().__init__(
            split("train", train_length),
            split("val", val_length),
            split("test", test_length),
            dataset=partial(DynamicMixingDataset, root, **dataset_kwargs),
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            seed=seed,
            shuffle=shuffle,
            fresh_examples=fresh_examples,
            drop_last=drop_last,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
        )
