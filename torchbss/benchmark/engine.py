"""The benchmark engine: a recipe -> tasks -> Hydra multirun -> result files -> summary.

``run(["recipe=speech_shared", "workers=4"])`` (``torchbss benchmark recipe=speech_shared
workers=4``):

1. composes the recipe (``configs/benchmark/<recipe>.yaml``, or a YAML file) with the
   overrides, as Hydra does;
2. expands it into tasks (:func:`~torchbss.benchmark.recipe.expand`: method variants of the
   parameter grid x examples of the data source), each keyed by the hash of its resolved
   config, and writes ``plan.json`` and ``tasks/<key>.json``;
3. leaves out the tasks already finished (unless ``overwrite=true``; failed ones run again
   unless ``retry_failed=false``);
4. launches the rest as one Hydra multirun, one job per task (``task=<key1>,<key2>,...``),
   through Hydra's launcher: the basic launcher (in this process, one after the other) for
   ``workers=1``, the joblib launcher (``hydra-joblib-launcher``, ``workers`` processes) for
   ``workers > 1``, or whatever ``hydra/launcher=...`` names (``submitit_slurm`` for SLURM,
   ``ray`` for a Ray cluster); every job writes its own ``results/<key>.json`` and a failing
   task is recorded there without stopping the others;
5. summarises the folder (:func:`~torchbss.benchmark.summarize`).

There is no scheduler here: the order, parallelism, retries on a cluster and resource requests
are the launcher's. Killing a run loses only the tasks that were running; run the same command
again and it continues.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torchbss._validation import check_bool
from torchbss.configs import config_dir

try:
    import hydra
    from omegaconf import DictConfig, OmegaConf
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the benchmark engine needs hydra-core: pip install 'torchbss[benchmark]'"
    ) from err

from torchbss.benchmark.recipe import Task, expand
from torchbss.benchmark.task import SaveOptions, is_done, run_task, task_path, write_json

__all__ = ["run", "plan", "usage", "compose_recipe", "recipe_names", "EngineSettings"]

#: keys of a recipe that configure the engine, not the tasks
ENGINE_KEYS = ("name", "out_dir", "data_dir", "workers", "threads", "overwrite", "retry_failed",
               "dry_run", "report", "plots", "save", "task")  # fmt: skip
_DEFAULT_RECIPE = "quick"


def recipe_names() -> list[str]:
    """The recipes shipped in ``configs/benchmark/`` (``engine`` is their shared base)."""
    folder = config_dir() / "benchmark"
    return sorted(p.stem for p in folder.glob("*.yaml") if p.stem != "engine")


def _recipe_location(recipe: str) -> tuple[str, str, list[str]]:
    """``(config_path, config_name, extra overrides)`` of a recipe name or YAML file."""
    path = Path(recipe)
    if recipe.endswith((".yaml", ".yml")):
        if not path.is_file():
            raise FileNotFoundError(f"recipe file not found: {recipe!r}")
        # the file's own folder first, the packaged configs for `defaults: - /benchmark/engine`
        search = f"hydra.searchpath=[file://{config_dir()}]"
        return str(path.resolve().parent), path.stem, [search]
    names = recipe_names()
    if recipe not in names:
        raise ValueError(
            f"unknown recipe {recipe!r}; the shipped recipes are {names} (or give a path to a "
            "recipe .yaml file)"
        )
    return str(config_dir()), f"benchmark/{recipe}", []


def _split_overrides(overrides: Sequence[str]) -> tuple[str, list[str], list[str]]:
    """``(recipe, task overrides, launcher overrides)``; sweeps are refused."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    recipe = _DEFAULT_RECIPE
    plain, launcher = [], []
    for item in overrides:
        if not isinstance(item, str):
            raise TypeError(f"overrides must be strings key=value, got {item!r}")
        if item in ("-m", "--multirun"):
            continue  # always a multirun
        if item.startswith("-"):
            raise ValueError(
                f"torchbss benchmark takes Hydra overrides (key=value), e.g. recipe=quick "
                f"workers=4; got {item!r}"
            )
        if item.startswith("recipe="):
            recipe = item.split("=", 1)[1]
            continue
        if item.startswith(("hydra/", "hydra.", "+hydra", "~hydra")):
            launcher.append(item)
            continue
        plain.append(item)
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(plain)
    except OverrideParseException as err:
        raise ValueError(
            f"cannot parse the overrides {plain}: {str(err).splitlines()[0]} (quote a value "
            "with spaces, commas or quotes: out_dir=\"'/a path/x'\")"
        ) from None
    sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
    if sweeps:
        raise ValueError(
            f"{sweeps[0]!r} is a sweep: put parameter grids in the recipe, e.g. "
            "'methods.auxiva.grid.n_iter=[20,50]' (a list is one value, a comma list a sweep)"
        )
    if any(o.key_or_group == "task" for o in parsed):
        raise ValueError("task= is set by the engine for each job; leave it out")
    return recipe, plain, launcher


def compose_recipe(recipe: str = _DEFAULT_RECIPE, overrides: Sequence[str] = ()) -> DictConfig:
    """The composed recipe (a shipped name or a ``.yaml`` path) with Hydra overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    config_path, config_name, extra = _recipe_location(recipe)
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_path, version_base="1.3"):
            cfg = compose(config_name, overrides=[*extra, *overrides])
    except (HydraException, OmegaConfBaseException) as err:
        message = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
        raise ValueError(f"recipe {recipe!r}: {message}") from None
    return cfg


class EngineSettings:
    """The engine keys of a composed recipe, checked.

    Raises:
        ValueError: ``workers < 1``, bad ``threads``, unknown ``save`` options.
    """

    def __init__(self, cfg: Any) -> None:
        workers = cfg.get("workers", 1)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(
                f"workers must be an integer >= 1 (tasks run in parallel on this machine), got "
                f"{workers!r}"
            )
        threads = cfg.get("threads", 1)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        self.workers = workers
        self.threads = threads
        self.name = str(cfg.get("name") or "benchmark")
        self.out_dir = Path(str(cfg.get("out_dir") or f"out/benchmark/{self.name}")).resolve()
        existing = next((p for p in (self.out_dir, *self.out_dir.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise ValueError(
                f"out_dir={self.out_dir}: {existing} is a file, not a folder; choose another "
                "out_dir"
            )
        # true or false (a string such as 'false' was truthy: overwrite='false' redid everything)
        flags = {"overwrite": False, "retry_failed": True, "dry_run": False, "report": False,
                 "plots": True}  # fmt: skip
        for name, default in flags.items():
            setattr(self, name, check_bool(cfg.get(name, default), name))
        save = OmegaConf.to_container(cfg.save, resolve=True) if cfg.get("save") else {}
        if self.report:  # the listening report plays the estimates
            save = {**save, "audio": True}
        self.save = SaveOptions.from_node(save)


def plan(cfg: Any) -> tuple[EngineSettings, list[Task]]:
    """Check a composed recipe and expand it into tasks (nothing is written or run)."""
    settings = EngineSettings(cfg)
    tasks = expand(cfg)
    return settings, tasks


def _write_plan(settings: EngineSettings, cfg: DictConfig, tasks: list[Task]) -> None:
    out = settings.out_dir
    out.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        path = task_path(out, task.key)
        if not path.is_file():
            write_json(path, task.spec)
    write_json(
        out / "plan.json",
        {
            "name": settings.name,
            "keys": [t.key for t in tasks],
            "tasks": [{"key": t.key, "variant": t.variant, "item": t.item} for t in tasks],
        },
    )
    text = OmegaConf.to_yaml(cfg, resolve=True)
    tmp = out / f".recipe.yaml.{os.getpid()}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out / "recipe.yaml")


@contextmanager
def _run_lock(out: Path):
    """Hold ``out_dir/.lock`` (an OS lock, released when the process ends, even on kill -9) so
    that a second run into the same folder is refused: it rewrote the plan under the first,
    whose summary then covered the other run's tasks. Without ``fcntl`` (Windows) no lock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on this platform
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ValueError(
                f"another torchbss benchmark is running into {out}; wait for it, or choose "
                "another out_dir"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _quote(value: str) -> str:
    """A Hydra override value that stays one string (paths with spaces, commas, quotes)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def job(cfg: DictConfig) -> dict[str, Any]:
    """The Hydra task function: run the task ``cfg.task`` of ``cfg.out_dir``."""
    settings = EngineSettings(cfg)
    outcome = run_task(
        settings.out_dir,
        str(cfg.task),
        save=settings.save,
        overwrite=settings.overwrite,
        retry_failed=settings.retry_failed,
        threads=settings.threads,
    )
    print(f"[torchbss benchmark] task {outcome['key']}: {outcome['status']}", flush=True)
    return outcome


def _launch(recipe: str, overrides: list[str], launcher: list[str], keys: list[str],
            settings: EngineSettings) -> None:  # fmt: skip
    config_path, config_name, extra = _recipe_location(recipe)
    argv = ["--multirun", *extra, *overrides, f"out_dir={_quote(str(settings.out_dir))}"]
    chooses_launcher = any(o.split("=", 1)[0].lstrip("+") == "hydra/launcher" for o in launcher)
    if settings.workers > 1 and not chooses_launcher:
        try:
            import hydra_plugins.hydra_joblib_launcher  # noqa: F401
        except ImportError:
            raise ImportError(
                f"workers={settings.workers} runs tasks in parallel with Hydra's joblib "
                "launcher: pip install hydra-joblib-launcher (or pip install "
                "'torchbss[benchmark]'), or use workers=1"
            ) from None
        argv += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={settings.workers}"]
    argv += [*launcher, "task=" + ",".join(keys)]

    @hydra.main(version_base="1.3", config_path=config_path, config_name=config_name)
    def app(cfg: DictConfig) -> Any:
        return job(cfg)

    saved = sys.argv
    sys.argv = ["torchbss-benchmark", *argv]
    try:
        app()
    finally:
        sys.argv = saved


def usage() -> str:
    """The help text of ``torchbss benchmark``: usage, shipped recipes, methods, data sources."""
    from torchbss.benchmark.methods import known_methods
    from torchbss.benchmark.sources import SOURCES

    return "\n".join(
        [
            "usage: torchbss benchmark [recipe=NAME|FILE.yaml] [key=value ...]",
            "       torchbss benchmark summarize FOLDER [--report]",
            "",
            "Runs a benchmark recipe (methods x parameter grid x data) as a Hydra multirun, one "
            "job per task;",
            "finished tasks are skipped on a re-run (overwrite=true runs them again).",
            "",
            f"recipes: {', '.join(recipe_names())} (configs/benchmark/, default {_DEFAULT_RECIPE})",
            f"methods: {', '.join(known_methods())}",
            f"data sources: {', '.join(sorted(SOURCES))}",
            "",
            "common overrides:",
            "  workers=N          tasks in parallel (Hydra's joblib launcher)",
            "  out_dir=PATH       the benchmark folder (results accumulate there)",
            "  overwrite=true     run finished tasks again (retry_failed=false: keep failures)",
            "  dry_run=true       list the tasks and whether they are done",
            "  report=true        listening report (save.audio=true, save.framewise=true, "
            "save.runlog=true save more)",
            "  data.items=[a,b]   some examples only (data.max_seconds=2: their first seconds)",
            "  methods.<label>.grid.<param>=[v1,v2]   change a parameter grid",
            "  hydra/launcher=submitit_slurm ...      run the tasks on SLURM (or ray)",
        ]
    )


def run(overrides: Sequence[str] = ()) -> int:
    """``torchbss benchmark [overrides]``: run a recipe, resuming where it stopped.

    Args:
        overrides: ``recipe=<name or file.yaml>`` (default ``quick``) and Hydra overrides of the
            recipe (``workers=4``, ``out_dir=...``, ``overwrite=true``, ``save.audio=true``,
            ``report=true``, ``data.items=[2x2_00]``, ``methods.ilrma.grid.n_basis=[2,4]``,
            ``hydra/launcher=submitit_slurm``, ...). Sweeps (``a=1,2``) are refused: grids
            belong in the recipe.

    Returns:
        0 when every task of the plan finished, 1 when some failed or did not run (see the
        summary), after printing the summary table.

    Raises:
        ValueError: an unknown recipe, method (the message lists the known ones) or data source,
            ``workers < 1``, a sweep override, a malformed recipe.
        ImportError: ``workers > 1`` without the joblib launcher.
    """
    from torchbss.benchmark.summary import summarize

    if any(o in ("-h", "--help") for o in overrides):
        print(usage())
        return 0
    recipe, plain, launcher = _split_overrides(list(overrides))
    cfg = compose_recipe(recipe, plain)
    settings, tasks = plan(cfg)
    out = settings.out_dir
    pending = [
        t.key for t in tasks
        if settings.overwrite or not is_done(out, t.key, settings.save, settings.retry_failed)
    ]  # fmt: skip
    n_variants = len({t.variant for t in tasks})
    n_items = len({t.item for t in tasks})
    print(
        f"benchmark {settings.name}: {len(tasks)} tasks ({n_variants} method variants x "
        f"{n_items} examples); {len(tasks) - len(pending)} already done, {len(pending)} to run "
        f"-> {out}",
        flush=True,
    )
    if settings.dry_run:
        for t in tasks:
            state = "to run" if t.key in pending else "done"
            print(f"  {t.key}  {t.variant}  {t.item}  ({state})")
        return 0
    with _run_lock(out):
        _write_plan(settings, cfg, tasks)
        if pending:
            try:
                _launch(recipe, plain, launcher, pending, settings)
            except SystemExit as stop:  # Hydra reports a launcher error itself and exits
                print(
                    f"the Hydra launcher stopped (exit status {stop.code}); the summary below "
                    "covers the tasks that finished: run the same command again to continue",
                    file=sys.stderr,
                )
        summary = summarize(out, report=settings.report, plots=settings.plots)
    print(summary.table())
    print(
        f"{summary.n_ok} finished, {summary.n_failed} failed, {summary.n_missing} not run; "
        f"summary: {summary.files['md']}"
        + (f"; report: {summary.files['report']}" if "report" in summary.files else "")
    )
    for failure in summary.failures():
        print(f"failed: {failure['variant']} on {failure['item']}: {failure['error']}")
    return 0 if summary.n_failed == 0 and summary.n_missing == 0 else 1
