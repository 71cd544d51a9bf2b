"""Names of runs, tuned models and checkpoints: built and parsed here, nowhere else.

- a run id: `run-<yyyymmdd>-<hhmmss>-<4 hex>`;
- a tuned model, in OpenAI's shape: `ft:<base>:<org>:<suffix>:<run id>` (org is the project);
- a job's checkpoint as a model: `<tuned model>:ckpt-step-<N>`, and as an object id `ftckpt_<24 hex>`.
"""

import hashlib
import re
import secrets
from datetime import datetime

from tuneforge.models.catalog import display_name

CHECKPOINT_NAME = re.compile(r"^(?P<model>.+):ckpt-step-(?P<step>\d+)$")


def new_run_id() -> str:
    return f"run-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def tuned_model_name(base_model: str, org: str, suffix: str | None, run_id: str) -> str:
    """OpenAI's shape of a tuned model's name: `ft:<base>:<org>:<suffix>:<id>`."""
    return f"ft:{display_name(base_model)}:{org}:{suffix or ''}:{run_id}"


def is_tuned_name(name: str) -> bool:
    """A name of a run, a tuned model or one of their checkpoints (never a base model's)."""
    return name.startswith(("ft:", "run-"))


def checkpoint_model_name(model_name: str, step: int) -> str:
    return f"{model_name}:ckpt-step-{step}"


def parse_checkpoint(name: str) -> tuple[str, int] | None:
    """(the tuned model or run, the step) of a checkpoint name; None for any other name."""
    match = CHECKPOINT_NAME.match(name)
    return (match["model"], int(match["step"])) if match else None


def run_id_of(name: str) -> str:
    """The run behind a run id, a tuned model name (its last field) or a checkpoint name."""
    checkpoint = parse_checkpoint(name)
    name = checkpoint[0] if checkpoint else name
    return name.rsplit(":", 1)[-1] if name.startswith("ft:") else name


def checkpoint_id(job_id: str, step: int) -> str:
    """A job checkpoint's object id (`ftckpt_...`): stable for the job and step."""
    return "ftckpt_" + hashlib.sha256(f"{job_id}:{step}".encode()).hexdigest()[:24]
