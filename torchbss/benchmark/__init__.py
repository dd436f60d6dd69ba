"""Benchmark engine: recipes of methods x parameter grid x data, run as resumable Hydra multiruns.

A *recipe* (``configs/benchmark/<name>.yaml``) names a data source, the methods with a
parameter grid each, the STFT and the metric settings. :func:`run` expands it into tasks (one
method variant on one example), keys every task by the hash of its resolved config, runs the
unfinished ones through Hydra's launchers (one after the other, in parallel with joblib, or on
SLURM / Ray) and summarises the result files; :func:`summarize` rebuilds the summary (CSV, JSON,
Markdown, figures, listening report) of a benchmark folder.

Command line (after ``pip install 'torchbss[benchmark]'``)::

    torchbss benchmark recipe=quick                          # smoke run, no data needed
    torchbss benchmark recipe=speech_shared workers=2 save.audio=true
    torchbss benchmark recipe=speech_shared hydra/launcher=submitit_slurm \\
        hydra.launcher.partition=cpu hydra.launcher.cpus_per_task=4
    torchbss benchmark summarize out/benchmark/speech_shared --report

Modules: :mod:`~torchbss.benchmark.sources` (data-source registry),
:mod:`~torchbss.benchmark.methods` (method registry), :mod:`~torchbss.benchmark.recipe`
(expansion and keys), :mod:`~torchbss.benchmark.task` (one task, result files),
:mod:`~torchbss.benchmark.summary` (summaries), :mod:`~torchbss.benchmark.engine` (Hydra).
"""

from torchbss.benchmark.methods import METHODS, Method, known_methods, register_method
from torchbss.benchmark.recipe import Task, expand, task_key
from torchbss.benchmark.sources import (
    SOURCES,
    DataSource,
    Example,
    build_source,
    register_source,
)
from torchbss.benchmark.summary import Summary, summarize
from torchbss.benchmark.task import SaveOptions, is_done, run_task

__all__ = [
    "run",
    "summarize",
    "Summary",
    "expand",
    "Task",
    "task_key",
    "run_task",
    "is_done",
    "SaveOptions",
    "METHODS",
    "Method",
    "known_methods",
    "register_method",
    "SOURCES",
    "DataSource",
    "Example",
    "build_source",
    "register_source",
    "compose_recipe",
    "recipe_names",
    "usage",
]


def __getattr__(name: str):
    # the Hydra side is imported on demand: summaries and single tasks need no Hydra
    if name in ("run", "compose_recipe", "recipe_names", "plan", "usage"):
        from torchbss.benchmark import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'torchbss.benchmark' has no attribute {name!r}")
