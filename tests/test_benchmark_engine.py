"""The benchmark engine: recipes -> keyed tasks -> Hydra multirun -> result files -> summary."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

pytest.importorskip("hydra")

from torchbss import io  # noqa: E402
from torchbss.benchmark import (  # noqa: E402
    compose_recipe,
    expand,
    known_methods,
    run,
    summarize,
)
from torchbss.benchmark import task as task_module  # noqa: E402
from torchbss.benchmark.summary import TIMING_FIELDS  # noqa: E402

FS = 16000
ITEMS = ("a", "b", "c")

RECIPE = """# @package _global_
defaults:
  - /benchmark/engine
  - _self_
name: tiny
data:
  source: wav_folder
  root: {root}
  mixture_suffix: _mix.wav
  reference_suffix: _ref.wav
  items: null
  max_seconds: null
stft: {{n_fft: 256, hop_length: 64}}
metrics: {{filter_length: 64, window_s: 0.25, hop_s: 0.25}}
plots: false
methods:
  auxiva:
    method: auxiva
    params: {{n_iter: 3}}
    grid: {{update: [ip2, iss]}}
  ilrma:
    method: ilrma
    params: {{n_iter: 3, n_basis: 2}}
{extra}"""

BROKEN = """  broken:
    method: auxiva
    params: {n_iter: 1, n_src: 3}   # 3 sources from 2 mics: every task of it fails
"""


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory):
    """Three short 2x2 convolutive mixtures of the bundled speech (references at mic 0)."""
    from torchbss.data import bundled_speech

    root = tmp_path_factory.mktemp("tiny_data")
    dry, _ = bundled_speech(num_samples=12000)
    for i, name in enumerate(ITEMS):
        g = torch.Generator().manual_seed(i)
        taps = torch.randn(2, 2, 24, generator=g) * torch.exp(-torch.arange(24) / 6.0)
        # images[m, k] = source k filtered by the response from source k to mic m
        images = torch.nn.functional.conv1d(
            dry[None].expand(2, 2, -1).reshape(1, 4, -1),
            taps.flip(-1).reshape(4, 1, 24),
            padding=23,
            groups=4,
        )[0, :, : dry.shape[-1]].reshape(2, 2, -1)  # (mics, sources, samples)
        mixture = images.sum(1)
        peak = mixture.abs().max() / 0.5
        io.save(root / f"{name}_mix.wav", mixture / peak, FS, subtype="float")
        io.save(root / f"{name}_ref.wav", images[0] / peak, FS, subtype="float")
    return root


def _recipe(tmp_path, data_folder, extra: str = "") -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(RECIPE.format(root=data_folder, extra=extra))
    return str(path)


def _run(recipe: str, out, *overrides: str) -> int:
    return run([f"recipe={recipe}", f"out_dir={out}", *overrides])


class Counter:
    """Wraps ``task._execute``: counts the tasks run, raises KeyboardInterrupt at call ``kill``."""

    def __init__(self, kill: int | None = None):
        self.calls = []
        self.kill = kill
        self.inner = task_module._execute

    def __call__(self, spec, folder, key, save):
        self.calls.append(key)
        if self.kill is not None and len(self.calls) == self.kill:
            raise KeyboardInterrupt  # as a Ctrl-C or a killed process: nothing is recorded
        return self.inner(spec, folder, key, save)


def _comparable(folder) -> dict:
    data = json.loads((folder / "summary.json").read_text())
    for row in data["tasks"] + data["methods"]:
        for field in TIMING_FIELDS:
            row.pop(field)
    return data


def test_a_killed_run_resumes_to_the_same_summary(tmp_path, data_folder, monkeypatch):
    recipe = _recipe(tmp_path, data_folder)
    assert _run(recipe, tmp_path / "whole") == 0
    reference = _comparable(tmp_path / "whole")
    assert reference["counts"] == {"tasks": 9, "ok": 9, "failed": 0, "missing": 0}

    killed = Counter(kill=4)
    monkeypatch.setattr(task_module, "_execute", killed)
    with pytest.raises(KeyboardInterrupt):
        _run(recipe, tmp_path / "resumed")
    done = sorted(p.stem for p in (tmp_path / "resumed" / "results").glob("*.json"))
    assert len(done) == 3  # the fourth task was killed before writing anything
    partial = summarize(tmp_path / "resumed", plots=False)
    assert (partial.n_ok, partial.n_missing) == (3, 6)
    assert "## Not run" in (tmp_path / "resumed" / "summary.md").read_text()

    resumed = Counter()
    monkeypatch.setattr(task_module, "_execute", resumed)
    assert _run(recipe, tmp_path / "resumed") == 0
    assert len(resumed.calls) == 6 and not set(resumed.calls) & set(done)
    assert _comparable(tmp_path / "resumed") == reference


def test_a_failing_task_is_recorded_and_the_others_finish(tmp_path, data_folder, monkeypatch):
    recipe = _recipe(tmp_path, data_folder, BROKEN)
    out = tmp_path / "out"
    assert _run(recipe, out) == 1
    summary = summarize(out, plots=False)
    assert (summary.n_ok, summary.n_failed, summary.n_missing) == (9, 3, 0)
    failures = summary.failures()
    assert {f["variant"] for f in failures} == {"broken"}
    assert all("n_src=3 sources needs at least as many mics" in f["error"] for f in failures)
    result = json.loads((out / "results" / f"{failures[0]['key']}.json").read_text())
    assert result["status"] == "failed" and "Traceback" in result["traceback"]
    assert "## Failed tasks" in (out / "summary.md").read_text()
    broken = next(m for m in summary.methods if m["variant"] == "broken")
    assert (broken["ok"], broken["failed"], broken["si_sdr_improvement"]) == (0, 3, None)
    # a re-run retries the failed tasks only, unless told not to
    counter = Counter()
    monkeypatch.setattr(task_module, "_execute", counter)
    assert _run(recipe, out, "retry_failed=false") == 1
    assert counter.calls == []
    assert _run(recipe, out) == 1
    assert sorted(counter.calls) == sorted(f["key"] for f in failures)


def test_finished_tasks_are_skipped_unless_asked(tmp_path, data_folder, monkeypatch):
    recipe = _recipe(tmp_path, data_folder)
    out = tmp_path / "out"
    counter = Counter()
    monkeypatch.setattr(task_module, "_execute", counter)
    assert _run(recipe, out, "data.items=[a]") == 0
    assert len(counter.calls) == 3
    assert _run(recipe, out, "data.items=[a]") == 0
    assert len(counter.calls) == 3  # nothing ran again
    assert _run(recipe, out, "data.items=[a]", "overwrite=true") == 0
    assert len(counter.calls) == 6
    # asking for audio re-runs the tasks that did not save it, then they are done
    assert _run(recipe, out, "data.items=[a]", "save.audio=true", "save.runlog=true") == 0
    assert len(counter.calls) == 9
    assert _run(recipe, out, "data.items=[a]", "save.audio=true") == 0
    assert len(counter.calls) == 9
    key = json.loads((out / "plan.json").read_text())["keys"][0]
    est, fs = io.load(out / "audio" / key / "estimate_1.wav")
    assert fs == FS and est.shape == (1, 12000)
    log = [json.loads(line) for line in (out / "logs" / f"{key}.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [0, 1, 2] and all("cost" in r for r in log)
    # a grid change adds tasks with new keys; the finished ones stay
    assert _run(recipe, out, "data.items=[a]", "methods.ilrma.params.n_basis=3") == 0
    assert len(counter.calls) == 10
    # a corrupted result counts as not done
    (out / "results" / f"{key}.json").write_text("{ not json")
    assert _run(recipe, out, "data.items=[a]") == 0
    assert counter.calls[-1] == key


def test_keys_follow_the_resolved_config(tmp_path, data_folder):
    recipe = _recipe(tmp_path, data_folder)
    tasks = expand(compose_recipe(recipe))
    assert [(t.variant, t.item) for t in tasks[:4]] == [
        ("auxiva[update=ip2]", "a"), ("auxiva[update=ip2]", "b"), ("auxiva[update=ip2]", "c"),
        ("auxiva[update=iss]", "a"),
    ]  # fmt: skip
    keys = [t.key for t in tasks]
    assert len(set(keys)) == 9 and all(len(k) == 16 for k in keys)
    assert [t.key for t in expand(compose_recipe(recipe, ["workers=3", "save.audio=true"]))] == keys
    changed = expand(compose_recipe(recipe, ["methods.auxiva.params.n_iter=4"]))
    same = [a.key == b.key for a, b in zip(tasks, changed)]
    assert same == [False] * 6 + [True] * 3  # only the AuxIVA tasks change


def test_bad_recipes_and_settings_are_refused_clearly(tmp_path, data_folder):
    recipe = _recipe(tmp_path, data_folder)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="unknown method 'auxvia'; known methods: auxiva, ilrma"):
        _run(recipe, out, "methods.auxiva.method=auxvia")
    assert known_methods() == ["auxiva", "ilrma", "online_auxiva", "online_ilrma",
                               "online_isnmf"]  # fmt: skip
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        _run(recipe, out, "workers=0")
    with pytest.raises(ValueError, match="is a sweep: put parameter grids in the recipe"):
        _run(recipe, out, "methods.auxiva.params.n_iter=3,5")
    # new since stop 34: a string flag was truthy (overwrite='false' redid every finished
    # task); duplicated items ran and counted twice; an empty list planned nothing and blamed
    # the folder; a fractional n_fft was truncated; an unparsable override printed a traceback
    cases = [
        (ValueError, "unknown data source 'wav'; known sources", ["data.source=wav"]),
        (ValueError, r"AuxIVA.*n_itr", ["+methods.auxiva.params.n_itr=3"]),
        (ValueError, r"To append to your config use \+data.foo=1", ["data.foo=1"]),
        (ValueError, "no example 'zz'|not examples of the source", ["data.items=[zz]"]),
        (ValueError, "task= is set by the engine", ["task=abc"]),
        (TypeError, "overwrite must be True or False", ["overwrite='false'"]),
        (ValueError, r"data.items lists \['a'\] more than once", ["data.items=[a,a]"]),
        (ValueError, "data.items is empty", ["data.items=[]"]),
        (TypeError, "stft.n_fft must be an integer", ["stft.n_fft=1000.9"]),
    ]
    for error, match, overrides in cases:
        with pytest.raises(error, match=match):
            _run(recipe, out, *overrides)
    with pytest.raises(ValueError, match="unknown recipe 'nope'; the shipped recipes are"):
        run(["recipe=nope"])
    with pytest.raises(ValueError, match="cannot parse the overrides.*quote a value"):
        _run(recipe, tmp_path / "it's")
    assert not (out / "results").exists()  # nothing ran


def test_a_second_run_into_the_same_folder_is_refused(tmp_path, data_folder, monkeypatch):
    """Two runs into one out_dir: the second rewrote the plan under the first, whose summary
    then covered the other's tasks. An OS lock (released even on kill -9) refuses it."""
    import fcntl

    recipe = _recipe(tmp_path, data_folder)
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "w") as held:  # another run holds the folder
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match="another torchbss benchmark is running into"):
            _run(recipe, out, "data.items=[a]")
    assert _run(recipe, out, "data.items=[a]") == 0  # released: it runs
    # a result file that is JSON but not a result of this engine is run again, not a crash
    result = next((out / "results").glob("*.json"))
    result.write_text("[]")
    assert _run(recipe, out, "data.items=[a]") == 0


def test_summaries_of_empty_folders_say_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="benchmark folder not found"):
        summarize(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is empty: no result files"):
        summarize(tmp_path / "empty")


def test_malformed_result_files_name_the_file_and_field(tmp_path):
    """A hand-edited or foreign result file gave KeyError / AttributeError / statistics'
    TypeError from inside the summary (a NaN metric crashed the median); it is now a
    ValueError naming the file and what was wrong. A result with ``metrics: null`` counts."""
    good = {"status": "ok", "spec": {"method": "auxiva", "variant": "auxiva", "item": "a"},
            "metrics": {"mean": {"si_sdr_improvement": 4.0}}, "time_s": 0.1,
            "real_time_factor": 0.05}  # fmt: skip
    results = tmp_path / "results"
    results.mkdir()
    path = results / "k1.json"
    cases = [
        ([], "expected a JSON object"),
        ({**good, "status": "OK"}, '\'status\' must be "ok" or "failed"'),
        ({**good, "spec": {"method": "auxiva"}}, "'spec' must be an object"),
        ({**good, "metrics": {"mean": {"si_sdr_improvement": "4.2"}}}, "must be a finite number"),
        ({**good, "metrics": {"mean": {"si_sdr_improvement": float("nan")}}}, "finite number"),
        ({**good, "real_time_factor": "fast"}, "'real_time_factor' must be a finite number"),
    ]
    for content, match in cases:
        path.write_text(json.dumps(content))
        with pytest.raises(ValueError, match=match) as err:
            summarize(tmp_path, plots=False)
        assert "k1.json" in str(err.value)
    path.write_text(json.dumps({**good, "status": "failed", "metrics": None}))
    (results / "k2.json").write_text(json.dumps({**good, "spec": {**good["spec"], "item": "b"}}))
    summary = summarize(tmp_path, plots=False)
    assert (summary.n_ok, summary.n_failed) == (1, 1)
    assert summary.methods[0]["si_sdr_improvement_median"] == 4.0
    (tmp_path / "plan.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ValueError, match="plan.json' is not a benchmark plan"):
        summarize(tmp_path, plots=False)


def test_summary_files_and_listening_report(tmp_path, data_folder):
    recipe = _recipe(tmp_path, data_folder)
    out = tmp_path / "out"
    assert _run(recipe, out, "data.items=[a,b]", "save.framewise=true") == 0
    with pytest.raises(ValueError, match="needs estimated audio.*save.audio=true"):
        summarize(out, report=True, plots=False)
    assert _run(recipe, out, "data.items=[a,b]", "save.audio=true", "save.framewise=true") == 0
    summary = summarize(out, report=True, plots=False, max_report_examples=3)
    assert summary.n_ok == 6
    rows = (out / "summary.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[0].startswith("key,method,variant,item,status")
    html = (out / "report" / "index.html").read_text()
    assert "torchbss benchmark: tiny" in html
    # the best AuxIVA variant and ILRMA on example a, then on b: 3 sections, 5 players each
    assert html.count('<section class="example"') == 3 and html.count("<audio") == 3 * 5
    ilrma = next(m for m in summary.methods if m["variant"] == "ilrma")
    assert ilrma["ok"] == 2 and ilrma["si_sdr_improvement"] is not None
    result = json.loads(next((out / "results").glob("*.json")).read_text())
    assert len(result["framewise"]["si_sdr"]) == 2  # frame-wise values per source
    assert result["metrics"]["format"] == "torchbss.MetricBundle/1"
    # every estimate gone: the error gives each task's reason (it asked whether the folder of
    # estimates was empty)
    shutil.rmtree(out / "audio")
    with pytest.raises(ValueError, match="no example to show.*FileNotFoundError"):
        summarize(out, report=True, plots=False)


@pytest.mark.slow
def test_summary_figures(tmp_path, data_folder):
    pytest.importorskip("matplotlib")
    recipe = _recipe(tmp_path, data_folder)
    out = tmp_path / "out"
    assert _run(recipe, out, "data.items=[a,b]", "plots=true", "report=true") == 0
    assert (out / "figures" / "metrics.png").stat().st_size > 1000
    assert (out / "figures" / "quality_vs_speed.png").stat().st_size > 1000
    assert "_spectrograms.png" in (out / "report" / "index.html").read_text()


def test_shipped_recipes_expand(data_dir):
    quick = expand(compose_recipe("quick"))
    assert len(quick) == 8 and quick[0].spec["data"]["source"] == "simulated"
    shared = expand(compose_recipe("speech_shared", [f"data_dir={data_dir}"]))
    assert len({t.item for t in shared}) == 9
    assert len({t.variant for t in shared}) == 18 and len(shared) == 162


@pytest.mark.slow
def test_parallel_workers_give_the_same_results(tmp_path, data_folder):
    """workers=2 runs the tasks through Hydra's joblib launcher: same results as one by one."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    recipe = _recipe(tmp_path, data_folder, BROKEN)
    assert _run(recipe, tmp_path / "serial") == 1
    assert _run(recipe, tmp_path / "parallel", "workers=2") == 1
    assert _comparable(tmp_path / "parallel") == _comparable(tmp_path / "serial")


@pytest.mark.slow
def test_quick_recipe_runs_end_to_end(tmp_path):
    assert run(["recipe=quick", f"out_dir={tmp_path}", "report=true"]) == 0
    assert (tmp_path / "report" / "index.html").is_file()


def test_single_channel_methods_get_the_reference_mic(tmp_path, data_folder):
    """Online IS-NMF separates the reference mic alone; its task runs like any other."""
    recipe = _recipe(tmp_path, data_folder)
    out = tmp_path / "out"
    extra = "+methods.isnmf={method:online_isnmf,params:{n_basis:2}}"
    assert _run(recipe, out, "data.items=[a]", extra, "save.runlog=true") == 0
    plan = json.loads((out / "plan.json").read_text())
    key = next(t["key"] for t in plan["tasks"] if t["variant"] == "isnmf")
    result = json.loads((out / "results" / f"{key}.json").read_text())
    assert result["spec"]["mono"] and result["n_estimates"] == 2
    log = json.loads((out / result["saved"]["runlog"]).read_text().splitlines()[0])
    assert log["samples"][0] == 0 and len(log["si_sdr"]) == 2


def test_data_sources(tmp_path, data_folder):
    from torchbss.benchmark import build_source, register_source
    from torchbss.benchmark.sources import DataSource, Example

    # stem folders: windows of every track, references = the target stems at ref_channel
    g = torch.Generator().manual_seed(0)
    stems = {name: torch.randn(2, 8000, generator=g) * 0.1 for name in ("x", "y")}
    for name, audio in stems.items():
        io.save(tmp_path / "stems" / "song" / f"{name}.wav", audio, 8000, subtype="float")
    src = build_source(
        {"source": "stem_folder", "root": str(tmp_path / "stems"), "stems": ["x", "y"],
         "segment_s": 0.5, "ref_channel": 1}
    )  # fmt: skip
    assert src.items() == ["song@0s", "song@0.5s"]
    ex = src.load("song@0.5s")
    assert ex.sample_rate == 8000 and ex.source_names == ["x", "y"]
    assert torch.allclose(ex.reference, torch.stack([stems["x"][1], stems["y"][1]])[:, 4000:])
    assert torch.allclose(ex.mixture, (stems["x"] + stems["y"])[:, 4000:])
    # wav folders may mix layouts; items and max_seconds select and crop
    three = torch.randn(3, 4000, generator=g) * 0.1
    io.save(tmp_path / "w" / "m3_mix.wav", three, FS, subtype="float")
    io.save(tmp_path / "w" / "m3_ref.wav", three, FS, subtype="float")
    for suffix in ("_mix.wav", "_ref.wav"):
        (tmp_path / "w" / f"a{suffix}").write_bytes((data_folder / f"a{suffix}").read_bytes())
    node = {"source": "wav_folder", "root": str(tmp_path / "w"), "mixture_suffix": "_mix.wav",
            "reference_suffix": "_ref.wav"}  # fmt: skip
    src = build_source(node)
    assert src.items() == ["a", "m3"]
    assert src.load("m3").mixture.shape == (3, 4000) and src.load("a").mixture.shape == (2, 12000)
    cropped = build_source({**node, "items": ["a"], "max_seconds": 0.25})
    assert cropped.items() == ["a"] and cropped.load("a").reference.shape == (2, 4000)

    # the registry takes new sources
    class Constant(DataSource):
        def __init__(self, n: int):
            self.n = n

        def items(self):
            return ["only"]

        def load(self, item):
            return Example(torch.ones(2, self.n), torch.ones(2, self.n), 8000)

    from torchbss.benchmark import SOURCES

    register_source("constant", Constant)
    try:
        assert build_source({"source": "constant", "n": 5}).load("only").mixture.shape == (2, 5)
        with pytest.raises(TypeError, match="data source 'constant'"):
            build_source({"source": "constant", "m": 5})
    finally:
        SOURCES.pop("constant")
    with pytest.raises(ValueError, match=r"unknown data source 'nope'; known sources: \["):
        build_source({"source": "nope"})
