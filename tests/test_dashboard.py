"""The dashboard in real headless Chromium (Debian's, driven by Playwright) against a real `tuneforge
serve` on loopback with the tiny model: the key prompt; the data page's upload and its findings with
their lines, and token statistics; the jobs list; a job page whose curve gains points while the
worker trains and whose status reaches succeeded. Every request a page makes must go to the server
itself. Screenshots at 1280 and 390 px wide go to TUNEFORGE_SCREENSHOT_DIR (or the test's
directory). Waits are locator based: the pages' Content-Security-Policy refuses the eval that
`wait_for_function` needs."""

import os
import re
import shutil
from pathlib import Path

import openai
import pytest
from helpers import write_jsonl
from playwright.sync_api import expect
from server_process import ServerProcess, tickets

WIDTHS = {"desktop": 1280, "phone": 390}


@pytest.fixture(scope="module")
def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("TUNEFORGE_REQUIRE_BROWSER") == "1" or os.environ.get("CI"):
            pytest.fail("no chromium on PATH, and this run must test the dashboard in a browser")
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir, chromium_path):
    process = ServerProcess(tmp_path_factory.mktemp("dash-home"), "--allow-model-dir", str(tiny_model_dir)).start()
    yield process
    process.stop()


@pytest.fixture()
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path, args=["--no-sandbox"])
        yield launched
        launched.close()


def shots_dir(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("TUNEFORGE_SCREENSHOT_DIR", tmp_path))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def test_a_job_page_shows_its_curve_growing_until_it_succeeds(server, browser, tiny_model_dir, tmp_path):
    key = server.new_key("alpha")
    client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=60)
    origin = server.base_url.removesuffix("/v1")
    page = browser.new_page(viewport={"width": WIDTHS["desktop"], "height": 900})
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    page.goto(f"{origin}/")  # -> /ui/jobs, which asks for the key first
    page.wait_for_selector("#key-dialog[open]")
    page.fill("#key-input", key)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("text=No jobs yet")

    data = write_jsonl(tmp_path / "tickets.jsonl", tickets(200))  # ~70 steps: long enough to watch
    uploaded = client.files.create(file=data.open("rb"), purpose="fine-tune")
    client.files.wait_for_processing(uploaded.id, poll_interval=0.2, max_wait_seconds=60)
    page.click("text=New job")  # the form, with the data check's estimate for the chosen file
    page.wait_for_selector("#job-form")
    page.select_option("#job-model", str(tiny_model_dir))
    page.select_option("#job-training-file", uploaded.id)
    expect(page.locator("#estimate")).to_contain_text("min of LoRA training", timeout=30_000)
    page.fill("#job-epochs", "3")
    page.fill("#job-batch", "8")
    page.fill("#job-suffix", "from-the-page")
    for name, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(shots_dir(tmp_path) / f"new-job-{name}.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= width
    page.set_viewport_size({"width": WIDTHS["desktop"], "height": 900})
    page.click("#job-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/ui/jobs/ftjob-.*"))
    job = client.fine_tuning.jobs.retrieve(page.url.rsplit("/", 1)[1])
    assert job.user_provided_suffix == "from-the-page" and job.hyperparameters.batch_size == 8
    page.wait_for_selector("#loss-chart canvas")

    def points() -> int:
        return int(re.match(r"(\d+)", page.inner_text("#curve-points")).group(1))

    seen = []  # the point counts the page showed while the worker trained
    while page.inner_text("#job-status").strip() != "succeeded":
        assert page.inner_text("#job-status").strip() in ("validating_files", "queued", "running")
        seen.append(points())
        page.wait_for_timeout(500)
        assert len(seen) < 480, "the job did not succeed within 4 minutes"
    events = client.fine_tuning.jobs.list_events(job.id, limit=1000).data
    steps = {e.data["step"] for e in events if e.type == "metrics"}  # every step and validation reported
    expect(page.locator("#curve-points")).to_have_text(f"{len(steps)} points", timeout=30_000)
    grew = sorted(set(seen) - {0, len(steps)})
    assert grew, f"the curve never showed a partial run: {sorted(set(seen))}"  # it gained points live
    assert seen == sorted(seen)  # and never lost any
    assert page.locator(".job-action").count() == 0  # nothing to cancel or pause once it succeeded
    page.wait_for_selector("#job-events >> text=The job has successfully completed")  # the events kept up
    shots = shots_dir(tmp_path)
    for name, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots / f"job-{name}.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= width  # nothing wider than the screen
    page.goto(f"{origin}/ui/jobs")  # the key is kept for the tab: no prompt this time
    page.wait_for_selector(f"a[href='/ui/jobs/{job.id}']")
    for name, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots / f"jobs-{name}.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert requested and all(url.startswith(origin + "/") for url in requested), [
        u for u in requested if not u.startswith(origin)
    ]


def test_an_uploaded_file_with_a_mistake_shows_its_finding_with_the_line(server, browser, tmp_path):
    key = server.new_key("alpha")
    origin = server.base_url.removesuffix("/v1")
    page = browser.new_page(viewport={"width": WIDTHS["desktop"], "height": 900})
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{origin}/ui/data")
    page.wait_for_selector("#key-dialog[open]")
    page.fill("#key-input", key)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#dropzone")
    records = tickets(12)
    records[2] = {"messages": [{"role": "robot", "content": "beep"}, {"role": "assistant", "content": "bug"}]}
    data = write_jsonl(tmp_path / "tickets-with-a-mistake.jsonl", records)
    page.set_input_files("#upload-input", str(data))  # the drop zone's own input: the upload a drop makes
    page.wait_for_url(re.compile(r".*/ui/data/file-.*"))
    expect(page.locator("#file-status")).to_have_text("error", timeout=60_000)
    row = page.locator(".findings tbody tr.severity-error").first
    cells = [row.locator("td").nth(i).inner_text() for i in range(4)]
    assert cells[0] == "3" and cells[1] == "messages[0].role" and "robot" in cells[3]
    page.click("#tokens button")
    page.wait_for_selector(".histogram rect.bar")
    assert page.locator(".histogram rect.bar").count() >= 1
    assert "Tokens per example" in page.inner_text("#tokens")
    shots = shots_dir(tmp_path)
    for name, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots / f"data-check-{name}.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= width
    page.goto(f"{origin}/ui/data")
    page.wait_for_selector("text=tickets-with-a-mistake.jsonl")
    page.screenshot(path=str(shots / "data-desktop.png"), full_page=True)
    assert all(url.startswith(origin + "/") for url in requested), [u for u in requested if not u.startswith(origin)]
