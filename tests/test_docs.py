"""The examples in the documentation run: every docstring example of the package (doctest,
``+SKIP`` where an example needs a file) and the README's quickstart, on a shared mixture."""

from __future__ import annotations

import doctest
import importlib
import io as _io
import pkgutil
import re
from pathlib import Path

import pytest

import torchbss

README = Path(__file__).resolve().parents[1] / "README.md"


def _modules() -> list[str]:
    found = pkgutil.walk_packages(torchbss.__path__, "torchbss.", onerror=lambda name: None)
    return sorted(m.name for m in found if not m.name.endswith("__main__"))


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name):
    try:
        module = importlib.import_module(name)
    except ImportError as err:  # an optional dependency (e.g. the training extra)
        pytest.skip(f"{name} needs {err.name}")
    out = _io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in doctest.DocTestFinder().find(module, name) if t.examples]
    for test in tests:
        runner.run(test, out=out.write)
    assert runner.failures == 0, out.getvalue()[-3000:]


def test_readme_quickstart_runs(data_dir):
    """The first Python block of README.md, with its mixture file a shared 2x2 mixture."""
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    mixture = data_dir / "mixtures" / "2x2_00_mix.flac"
    assert '"mixture.flac"' in block
    scope: dict = {}
    exec(compile(block.replace('"mixture.flac"', repr(str(mixture))), "README.md", "exec"), scope)
    # what it claims: the sources of the waveform separation, the streamed frames
    assert scope["y"].shape == (2, scope["x"].shape[-1]) and bool(scope["y"].isfinite().all())
    assert scope["y_t"].shape[-1] == 1
