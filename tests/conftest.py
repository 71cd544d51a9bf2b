"""Shared fixtures: a throw-away Tuneforge home per test session, and the bundled model's tokenizer.

The bundled model is converted from GGUF once (~15 s) into `.pytest_cache/tuneforge-models`, which
survives between local runs; CI, on a clean clone, converts it once per run.
"""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TUNEFORGE_MODEL_CACHE", str(REPO / ".pytest_cache" / "tuneforge-models"))


@pytest.fixture(autouse=True, scope="session")
def tuneforge_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("tuneforge-home")
    os.environ["TUNEFORGE_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def smol_tokenizer():
    from tuneforge.models.catalog import load_tokenizer

    return load_tokenizer("smollm2-135m-instruct")
