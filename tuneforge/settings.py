"""Where things live: the Tuneforge home (TUNEFORGE_HOME, default ~/.tuneforge) and what is under it.

The home holds the converted model cache (`models/`), measured hardware facts (`hardware.json`) and,
from the training stage on, the registry database and run directories.
"""

import os
from pathlib import Path


def tuneforge_home() -> Path:
    home = Path(os.environ.get("TUNEFORGE_HOME", Path.home() / ".tuneforge")).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def model_cache_dir() -> Path:
    """Converted base models. TUNEFORGE_MODEL_CACHE moves it out of the home, so that test runs with a
    throw-away home still convert the bundled model only once."""
    path = Path(os.environ.get("TUNEFORGE_MODEL_CACHE", tuneforge_home() / "models")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    """Run directories (`runs/<id>/`); TUNEFORGE_RUNS_DIR moves them."""
    path = Path(os.environ.get("TUNEFORGE_RUNS_DIR", tuneforge_home() / "runs")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
