"""report.html in real headless Chromium: it renders, shows the evaluation's numbers, and fetches nothing.

Needs Debian's `chromium`. `make test` (the README's command, which CI runs) installs it where it can
and sets TUNEFORGE_REQUIRE_BROWSER=1, so there a missing browser fails the test; so does `CI` set. A
plain `pytest` without chromium skips it, saying why. Set TUNEFORGE_SCREENSHOT_DIR to keep the screenshot.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import chat, write_jsonl

from tuneforge.evaluate.report import CSP
from tuneforge.runs.evaluation import run_eval
from tuneforge.runs.training import train_run
from tuneforge.train.config import TrainConfig

LABELS = ["billing", "bug"]
MODEL_BLUE = (76, 114, 176)  # report.MODEL_COLOUR, the tuned model's bars
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
]


@pytest.fixture(scope="session")
def chromium() -> str:
    """The browser's path; asked for first, so that a machine without one skips before any training."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("TUNEFORGE_REQUIRE_BROWSER") == "1" or os.environ.get("CI"):
        pytest.fail(
            "no chromium binary on PATH, and this run must test report.html in a browser "
            "(TUNEFORGE_REQUIRE_BROWSER=1, set by `make test`, or CI): apt-get install chromium"
        )
    pytest.skip(
        "no chromium binary on PATH: the browser test needs it (apt-get install chromium, "
        "or run `make test` as root, which installs it)"
    )


def open_in_chromium(
    chromium: str, page: Path, workdir: Path, *action: str, window: str = "1280,800"
) -> tuple[str, list[str]]:
    """Run one headless Chromium action on the page; (stdout, the URLs the page requested)."""
    net_log = workdir / f"net-{len(list(workdir.glob('net-*')))}.json"
    finished = subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={workdir / 'profile'}",
            f"--log-net-log={net_log}",
            f"--window-size={window}",
            *action,
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    return finished.stdout, page_requests(net_log)


def page_requests(net_log: Path) -> list[str]:
    """Every URL request in Chromium's net log that the page caused. A fresh profile also sends the
    browser's own housekeeping (component and extension updates, account checks) whatever the page:
    those carry no initiator and no file:// network isolation key, and are left out; a request made
    on the page's behalf carries the page's file:// origin in one or the other."""
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for event in log["events"]:
        params = event.get("params", {})
        if event["type"] != start_job or "url" not in params:
            continue
        browsers_own = params.get("initiator") == "not an origin" and "file://" not in params.get(
            "network_isolation_key", ""
        )
        if not browsers_own:
            urls.append(params["url"])
    return urls


def remote(urls: list[str]) -> list[str]:
    return [url for url in urls if not url.startswith(("file:", "data:"))]


@pytest.fixture(scope="module")
def evaluated(chromium, tmp_path_factory, tiny_model_dir):
    """A tuned tiny classifier evaluated against its base, probes included: run_eval writes the report."""
    directory = tmp_path_factory.mktemp("report")
    records = [chat(f"Ticket {i}: my {'invoice' if i % 2 else 'screen'} problem", LABELS[i % 2]) for i in range(24)]
    data = write_jsonl(directory / "tickets.jsonl", records)
    run = train_run(
        TrainConfig(
            model=str(tiny_model_dir),
            data=data,
            n_epochs=2,
            batch_size=8,
            precision="fp32",
            learning_rate_multiplier=5,
        )
    )
    results = run_eval(run.run_id, data, str(tiny_model_dir), None, directory / "eval", max_new_tokens=4, probes=True)
    return directory, results, run


def test_report_renders_in_chromium_with_its_numbers_and_no_network(chromium, evaluated, tmp_path):
    directory, results, run = evaluated
    page = directory / "eval" / "report.html"
    assert "`eval/report.html`" in (run.run_dir / "README.md").read_text()  # the model card names the page

    screenshot = tmp_path / "report.png"
    _, screenshot_requests = open_in_chromium(
        chromium, page, tmp_path, f"--screenshot={screenshot}", window="1280,3000"
    )
    dom, dom_requests = open_in_chromium(chromium, page, tmp_path, "--dump-dom")
    if target := os.environ.get("TUNEFORGE_SCREENSHOT_DIR"):
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(target) / "report.png")

    from PIL import Image

    image = Image.open(screenshot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert image.size == (1280, 3000) and len(colours) > 100, "the screenshot is (nearly) blank"
    assert any(colour == MODEL_BLUE for _, colour in colours), "the A/B bars did not render"

    for section in ("headline", "training", "metrics", "ab", "confusion", "examples", "probes"):
        assert f'id="{section}"' in dom
    for probe in results["probes"]:
        assert f"<h3>{probe}</h3>" in dom
    accuracy = results["comparison"]["accuracy"]
    for mean in (accuracy["mean_a"], accuracy["mean_b"]):
        assert f"{100 * mean:.1f} %" in dom
    assert f"{accuracy['wins']} / {accuracy['ties']} / {accuracy['losses']}" in dom
    assert f"{results['scores']['model']['loss']:.3f}" in dom and run.run_id in dom
    assert dom.count("<svg") >= 2  # the training curves and the A/B bars
    assert remote(screenshot_requests + dom_requests) == []


def test_the_network_check_sees_requests_and_the_reports_policy_blocks_them(chromium, tmp_path):
    """The check above can fail: an external image is seen as a request, unless the report's CSP is on the page."""
    image = '<img src="http://tuneforge.invalid/pixel.png">'
    open_page = write_page(tmp_path / "open.html", f"<html><body>{image}</body></html>")
    guarded_page = write_page(
        tmp_path / "guarded.html",
        f'<html><head><meta http-equiv="Content-Security-Policy" content="{CSP}"></head><body>{image}</body></html>',
    )
    _, seen = open_in_chromium(chromium, open_page, tmp_path, "--dump-dom")
    assert set(remote(seen)) == {"http://tuneforge.invalid/pixel.png"}
    _, guarded = open_in_chromium(chromium, guarded_page, tmp_path, "--dump-dom")
    assert remote(guarded) == []


def write_page(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
