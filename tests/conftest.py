"""Shared fixtures: the real embedded model (loaded once), shared data (skipped where absent).

Every ``bipo_lens`` module is imported under jaxtyping's import hook, so the tensor shapes in
signatures are checked by beartype at run time throughout the suite.
"""

import os
import warnings
from pathlib import Path

import pytest
from jaxtyping import install_import_hook

with install_import_hook("bipo_lens", "beartype.beartype"):
    import bipo_lens  # noqa: F401
    import bipo_lens.analysis  # noqa: F401
    import bipo_lens.cli  # noqa: F401
    import bipo_lens.activations  # noqa: F401
    import bipo_lens.chat  # noqa: F401
    import bipo_lens.evaluation  # noqa: F401
    import bipo_lens.figures  # noqa: F401
    import bipo_lens.finetune  # noqa: F401
    import bipo_lens.models  # noqa: F401
    import bipo_lens.generation  # noqa: F401
    import bipo_lens.pairs  # noqa: F401
    import bipo_lens.plots  # noqa: F401
    import bipo_lens.scoring  # noqa: F401
    import bipo_lens.shapes  # noqa: F401
    import bipo_lens.distributed  # noqa: F401
    import bipo_lens.serve  # noqa: F401
    import bipo_lens.steering  # noqa: F401
    import bipo_lens.tokens  # noqa: F401
    import bipo_lens.training  # noqa: F401
    import bipo_lens.vectors  # noqa: F401

warnings.filterwarnings("ignore")
SHARED_DATA = Path(os.environ.get("BIPO_LENS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true",
                     help="also run the long checks (marked slow); the default run and CI leave them out")


def pytest_collection_modifyitems(config, items):
    """Long checks (``@pytest.mark.slow``) are deselected unless ``--slow`` is given: the default run
    stays within the suite's time budget, and ``./dev test --slow`` runs everything."""
    if config.getoption("--slow"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


@pytest.fixture(scope="session")
def model():
    import transformers

    transformers.logging.set_verbosity_error()
    return bipo_lens.load_model(device="cpu")


@pytest.fixture(scope="session")
def gemma():
    """Gemma-3-270m, the second embedded model (another family, another width), loaded once."""
    return bipo_lens.load_model("gemma-3-270m", device="cpu")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "bipo" / "power-seeking" / "train.csv").is_file():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
