"""Where things live: the Tuneforge home (TUNEFORGE_HOME, default ~/.tuneforge) and what is under it.

The home holds the converted model cache (`models/`), measured hardware facts (`hardware.json`) and,
from the training stage on, the registry database and run directories.
"""

import os
from pathlib import Path


def tuneforge_home() -> Path:
    home = Path(os.environ.get("TUNEFORGE_HOME", Path.home() / ".tuneforge")).expanduser()
    home.mkdir(mode=0o700, parents=True, exist_ok=True)  # it holds other people's data once a server runs on it
    return home


def protect_home() -> None:
    """For the server and the worker, which hold every project's files, runs and keys: the home is
    this user's alone (0700) and every file they create is too (umask 077: files 0600, folders 0700)."""
    os.umask(0o077)
    home = tuneforge_home()
    home.chmod(0o700)
    for name in ("registry.db", "registry.db-wal", "registry.db-shm"):
        if (home / name).exists():
            (home / name).chmod(0o600)


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
