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
from server_process import TINY_LORA, ServerProcess, tickets, wait_for

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


def open_with_key(browser, origin: str, path: str, key: str):
    """A desktop-sized page on `path`, the key entered at its prompt; every URL it requests is kept."""
    page = browser.new_page(viewport={"width": WIDTHS["desktop"], "height": 900})
    page.requested = []  # by this page and any tab it opens (a report)
    page.context.on("request", lambda request: page.requested.append(request.url))
    page.goto(f"{origin}{path}")
    page.wait_for_selector("#key-dialog[open]")
    page.fill("#key-input", key)
    page.click("#key-form button[type=submit]")
    return page


def screenshots(page, tmp_path: Path, name: str) -> None:
    """The page at both widths, saved; nothing on it wider than the screen."""
    for label, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots_dir(tmp_path) / f"{name}-{label}.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= width, f"{name} at {width} px"
    page.set_viewport_size({"width": WIDTHS["desktop"], "height": 900})


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

    data = write_jsonl(tmp_path / "tickets.jsonl", tickets(120))  # 45 steps: long enough to watch
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
    records = tickets(30)
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
    # Prepared and split from the page: the bad record set aside, the rest split 80/10/10 into new files.
    page.click("#prepare-form button[type=submit]")  # without setting errors aside: refused, saying why
    expect(page.locator("p.error")).to_contain_text("1 error(s); nothing was written")
    page.check("#prepare-form input[name=drop_invalid]")
    page.fill("#prepare-train", "80")
    page.fill("#prepare-validation", "10")
    page.fill("#prepare-test", "10")
    page.click("#prepare-form button[type=submit]")
    expect(page.locator("#prepared-result")).to_contain_text("29 examples kept of 30 records")
    assert page.locator("#prepared-result li").count() == 3
    screenshots(page, tmp_path, "prepared")
    page.click("#prepared-result a:text('tickets-with-a-mistake-train.jsonl')")
    expect(page.locator("#file-status")).to_have_text("processed", timeout=60_000)
    page.goto(f"{origin}/ui/data")
    page.wait_for_selector("text=tickets-with-a-mistake.jsonl")
    page.screenshot(path=str(shots / "data-desktop.png"), full_page=True)
    assert all(url.startswith(origin + "/") for url in requested), [u for u in requested if not u.startswith(origin)]


def test_a_tuned_model_shows_its_lineage_and_downloads_and_plays_against_its_base(
    server, browser, tiny_model_dir, tmp_path
):
    key = server.new_key("models")
    client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=60)
    origin = server.base_url.removesuffix("/v1")
    data = write_jsonl(tmp_path / "lineage-tickets.jsonl", tickets(16))
    uploaded = client.files.create(file=data.open("rb"), purpose="fine-tune")
    client.files.wait_for_processing(uploaded.id, poll_interval=0.2, max_wait_seconds=60)
    job = client.fine_tuning.jobs.create(
        model=str(tiny_model_dir),
        training_file=uploaded.id,
        hyperparameters={"n_epochs": 1, "batch_size": 8},
        suffix="lineage",
        extra_body=TINY_LORA,
    )
    job = wait_for(client, job.id, ("succeeded", "failed"))
    assert job.status == "succeeded", job.error
    tuned = job.fine_tuned_model
    test_file = write_jsonl(tmp_path / "test-tickets.jsonl", tickets(12))
    tests = client.files.create(file=test_file.open("rb"), purpose="fine-tune")
    client.files.wait_for_processing(tests.id, poll_interval=0.2, max_wait_seconds=60)

    page = open_with_key(browser, origin, "/ui/models", key)
    page.wait_for_selector("#tuned-models")
    screenshots(page, tmp_path, "models")
    page.click(f"#tuned-models a:text-is('{tuned}')")
    page.wait_for_selector("#lineage")
    lineage = page.inner_text("#lineage")
    for shown in (uploaded.id, "lineage-tickets.jsonl", job.id, "sha256", "16 examples", "none yet"):
        assert shown in lineage, (shown, lineage)
    expect(page.locator("#model-card")).to_contain_text("Fine-tuned by Tuneforge")
    screenshots(page, tmp_path, "model")

    # Downloads are links the browser follows without the key: signed for this key, refused unsigned.
    links = {a.inner_text(): a.get_attribute("href") for a in page.locator("#downloads a").all()}
    weights = page.request.get(origin + links["weights.zip"])
    assert weights.status == 200 and weights.body()[:2] == b"PK"
    gguf = page.request.get(origin + links["model-q8_0.gguf"])  # made on this first request
    assert gguf.status == 200 and gguf.body()[:4] == b"GGUF"
    card = page.request.get(origin + links["README.md"])
    assert card.status == 200 and card.text().startswith("---\nlibrary_name: peft")
    unsigned = page.request.get(origin + links["README.md"].split("?")[0])
    assert unsigned.status == 401 and unsigned.json()["error"]["code"] == "invalid_link"
    tampered = page.request.get(origin + links["README.md"].replace("README.md", "metrics.csv", 1))
    assert tampered.status == 401

    # An evaluation against the base, started from the model's page; its page follows it to the report.
    page.select_option("#evaluate-file", tests.id)
    page.fill("#evaluate-max", "4")
    page.click("#evaluate-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/ui/evaluations/\d+$"))
    expect(page.locator("#evaluation-status")).to_have_text("succeeded", timeout=180_000)
    assert "exact_match" in page.inner_text("#evaluation-headline")
    expect(page.frame_locator("#report-frame").locator("body")).to_contain_text(tuned)
    screenshots(page, tmp_path, "evaluation")
    with page.context.expect_page() as report_tab:  # and the report in a tab of its own
        page.click("a.evaluation-report")
    report_tab.value.wait_for_load_state()
    assert tuned in report_tab.value.content()
    page.click("nav >> text=Evaluations")
    expect(page.locator("#evaluation-list tbody tr")).to_have_count(1)
    expect(page.locator("#evaluation-list")).to_contain_text("succeeded")
    screenshots(page, tmp_path, "evaluations")
    page.goto(f"{origin}/ui/model?name={tuned}")
    expect(page.locator("#lineage a.evaluation-report")).to_have_count(1)

    # The playground: the tuned model against its base, streamed side by side.
    page.click("text=Try it against its base")
    page.wait_for_selector("#playground-form")
    assert page.input_value("#model-a") == str(tiny_model_dir) and page.input_value("#model-b") == tuned
    page.fill("#play-prompt", "Ticket 99: my invoice problem")
    page.fill("#play-max-tokens", "12")
    page.click("#playground-form button[type=submit]")
    for side in ("a", "b"):
        expect(page.locator(f"#meta-{side}")).to_contain_text("finished:", timeout=60_000)
        assert page.inner_text(f"#answer-{side}").strip(), side
        expect(page.locator(f"#rate-{side}")).to_be_visible()
    answer_b = page.inner_text("#answer-b")
    page.click("#rate-b .rate-button[data-rating='1']")
    expect(page.locator("#rate-b .rated")).to_have_text("Rated good.")
    page.click("#rate-a summary")
    page.fill("#rate-a .correction", "billing")
    page.click("#rate-a .save-correction")
    expect(page.locator("#rate-a .rated")).to_have_text("Correction saved.")
    expect(page.locator("#feedback-table tbody tr")).to_have_count(2)
    screenshots(page, tmp_path, "playground")

    # Stored: the export holds the good answer and the correction, as chat examples.
    export = page.request.get(origin + page.get_attribute("#feedback a.button >> nth=0", "href"))
    records = [line for line in export.text().splitlines() if line]
    assert len(records) == 2 and "billing" in export.text() and answer_b.strip()[:5] in export.text()
    page.click("#feedback .feedback-to-data")  # and as a new training file, checked on the Data page:
    page.wait_for_url(re.compile(r".*/ui/data/file-.*"))  # two examples are too few to train on, it says
    expect(page.locator("#file-status")).to_have_text("error", timeout=60_000)
    expect(page.locator(".findings")).to_contain_text("2 usable example(s); at least 10 needed")

    page.goto(f"{origin}/ui/model?name={tuned}")
    # The tuned model's rating only: the correction was its base's.
    expect(page.locator("#model-feedback")).to_have_text("1 rating: 1 good, 0 bad, 0 corrected")

    # Operations: the playground's two streamed requests, one per model, in the charts and the table.
    page.click("nav >> text=Operations")
    expect(page.locator("#operations .chart canvas")).to_have_count(3)
    expect(page.locator("#ops-points")).to_contain_text("2 model(s)")
    summary = page.inner_text("#ops-summary")
    assert tuned in summary and str(tiny_model_dir) in summary
    screenshots(page, tmp_path, "operations")
    assert all(url.startswith(origin + "/") for url in page.requested), page.requested
