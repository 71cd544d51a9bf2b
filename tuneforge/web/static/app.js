// The dashboard's behaviour: the API key (kept in this tab's session storage, sent to this server
// only), the page's fragment, job actions, and the live curves. No framework: htmx swaps the
// server's fragments, uPlot draws the charts; both are vendored beside this file.
"use strict";

const KEY = "tuneforge.key";
const needsKey = () => document.body.dataset.auth === "required";
const key = () => sessionStorage.getItem(KEY);

function authHeaders() {
  return needsKey() && key() ? { Authorization: `Bearer ${key()}` } : {};
}

function askForKey() {
  const dialog = document.getElementById("key-dialog");
  if (!dialog.open) dialog.showModal();
}

function loadFragment() {
  const main = document.getElementById("content");
  if (needsKey() && !key()) return askForKey();
  htmx.ajax("GET", main.dataset.fragment, { target: main, swap: "innerHTML" });
}

document.addEventListener("DOMContentLoaded", () => {
  const forget = document.getElementById("forget-key");
  forget.hidden = !needsKey();
  forget.addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    askForKey();
  });
  document.getElementById("key-form").addEventListener("submit", () => {
    sessionStorage.setItem(KEY, document.getElementById("key-input").value.trim());
    loadFragment();
  });
  document.body.addEventListener("htmx:configRequest", (event) => {
    Object.assign(event.detail.headers, authHeaders());
  });
  document.body.addEventListener("htmx:responseError", (event) => {
    if (event.detail.xhr.status === 401) {
      sessionStorage.removeItem(KEY);
      askForKey();
    } else {
      showError(event.detail.xhr);
    }
  });
  document.body.addEventListener("htmx:afterSwap", () => {
    startCurves();
    startOperations();
  });
  document.body.addEventListener("click", onAction);
  document.body.addEventListener("click", onPlaygroundClick);
  document.body.addEventListener("submit", (event) => {
    if (event.target.id === "job-form") {
      event.preventDefault();
      createJob(event.target);
    } else if (event.target.id === "playground-form") {
      event.preventDefault();
      askBoth(event.target);
    }
  });
  document.body.addEventListener("change", (event) => {
    if (event.target.id === "upload-input" && event.target.files.length) upload(event.target.files[0]);
  });
  document.body.addEventListener("dragover", (event) => {
    const zone = event.target.closest("#dropzone");
    if (!zone) return;
    event.preventDefault();
    zone.classList.add("over");
  });
  document.body.addEventListener("dragleave", (event) => {
    const zone = event.target.closest("#dropzone");
    if (zone) zone.classList.remove("over");
  });
  document.body.addEventListener("drop", (event) => {
    const zone = event.target.closest("#dropzone");
    if (!zone) return;
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) upload(event.dataTransfer.files[0]);
  });
  loadFragment();
});

function showError(xhr) {
  let message = `${xhr.status}`;
  try {
    message = JSON.parse(xhr.responseText).error.message;
  } catch (_) {}
  const main = document.getElementById("content");
  const box = document.createElement("p");
  box.className = "error";
  box.textContent = message;
  main.prepend(box);
}

// A dropped or chosen file (or the feedback export) goes to the API's own upload (purpose fine-tune); its check page follows.
async function upload(file) {
  const status = document.getElementById("upload-status") || document.createElement("p");
  status.textContent = `Uploading ${file.name}…`;
  const form = new FormData();
  form.append("purpose", "fine-tune");
  form.append("file", file, file.name);
  const response = await fetch("/v1/files", { method: "POST", headers: authHeaders(), body: form });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    status.textContent = "";
    showError({ status: response.status, responseText: JSON.stringify(body) });
    return;
  }
  window.location.assign(`/ui/data/${body.id}`);
}

// The form's fields as OpenAI's job request: numbers where given, "auto" where not, our extras beside.
async function createJob(form) {
  const fields = Object.fromEntries(new FormData(form).entries());
  const value = (text) => (text.trim() === "" || text.trim() === "auto" ? "auto" : Number(text));
  const hyperparameters = {
    n_epochs: value(fields.n_epochs),
    batch_size: value(fields.batch_size),
    learning_rate_multiplier: value(fields.learning_rate_multiplier),
  };
  if (fields.method === "dpo") hyperparameters.beta = value(fields.beta);
  const body = {
    model: fields.model,
    training_file: fields.training_file,
    method: { type: fields.method, [fields.method]: { hyperparameters } },
    training_method: fields.training_method,
  };
  if (fields.validation_file) body.validation_file = fields.validation_file;
  if (fields.suffix) body.suffix = fields.suffix;
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  const response = await fetch("/v1/fine_tuning/jobs", {
    method: "POST",
    headers: { ...authHeaders(), "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  button.disabled = false;
  if (!response.ok) return showError({ status: response.status, responseText: JSON.stringify(answer) });
  window.location.assign(`/ui/jobs/${answer.id}`);
}

async function onAction(event) {
  const button = event.target.closest(".job-action");
  if (!button) return;
  button.disabled = true;
  const response = await fetch(`/v1/fine_tuning/jobs/${button.dataset.job}/${button.dataset.verb}`, {
    method: "POST",
    headers: authHeaders(),
  });
  if (!response.ok) showError({ status: response.status, responseText: await response.text() });
  loadFragment();
}

// ---------------------------------------------------------------------------------------- curves
const SERIES = {
  loss: [
    ["train_loss", "training loss", "#4c72b0"],
    ["valid_loss", "validation loss", "#dd8452"],
  ],
  accuracy: [
    ["train_accuracy", "training token accuracy", "#4c72b0"],
    ["valid_accuracy", "validation token accuracy", "#dd8452"],
  ],
};
let curveState = null;

function startCurves() {
  const section = document.getElementById("job");
  if (!section) return;
  if (curveState && curveState.job === section.dataset.job && document.getElementById("loss-chart").firstChild) return;
  if (curveState) clearTimeout(curveState.timer);
  curveState = { job: section.dataset.job, last: 0, rows: new Map(), charts: {}, timer: null };
  pollCurves();
}

async function pollCurves() {
  const state = curveState;
  const response = await fetch(`/ui/data/jobs/${state.job}/curves?after=${state.last}`, { headers: authHeaders() });
  if (state !== curveState) return; // another job's page replaced this one
  if (response.ok) {
    const data = await response.json();
    data.step.forEach((step, i) => {
      const row = state.rows.get(step) || {};
      for (const name of Object.keys(SERIES).flatMap((axis) => SERIES[axis].map((s) => s[0]))) {
        if (data[name][i] !== null && data[name][i] !== undefined) row[name] = data[name][i];
      }
      state.rows.set(step, row);
    });
    state.last = data.last;
    draw(state);
    if (!["succeeded", "failed", "cancelled"].includes(data.status)) {
      state.timer = setTimeout(pollCurves, 2000);
    }
  }
}

function draw(state) {
  const steps = [...state.rows.keys()].sort((a, b) => a - b);
  document.getElementById("curve-points").textContent = `${steps.length} points`;
  for (const [axis, series] of Object.entries(SERIES)) {
    const element = document.getElementById(`${axis}-chart`);
    if (!element) continue;
    const columns = [steps, ...series.map(([name]) => steps.map((s) => state.rows.get(s)[name] ?? null))];
    const chart = state.charts[axis];
    if (chart && chart.root.isConnected) {
      chart.setData(columns);
      continue;
    }
    element.replaceChildren();
    state.charts[axis] = new uPlot(
      {
        width: Math.max(280, element.clientWidth),
        height: 240,
        scales: { x: { time: false } },
        axes: [{ label: "step" }, { label: axis }],
        series: [{ label: "step" }, ...series.map(([, label, colour]) => ({ label, stroke: colour, width: 2, spanGaps: true }))],
      },
      columns,
      element,
    );
  }
}

window.addEventListener("resize", () => {
  for (const chart of opsCharts) {
    const element = chart.root.parentElement;
    if (element) chart.setSize({ width: Math.max(280, element.clientWidth), height: 220 });
  }
  if (!curveState) return;
  for (const [axis, chart] of Object.entries(curveState.charts)) {
    const element = document.getElementById(`${axis}-chart`);
    if (element) chart.setSize({ width: Math.max(280, element.clientWidth), height: 240 });
  }
});

// ------------------------------------------------------------------------------------ playground
// One prompt to both sides at once, each streamed from /v1/chat/completions as the API's clients
// read it (server-sent events); an answer's completion id is what its feedback names.
function askBoth(form) {
  const fields = Object.fromEntries(new FormData(form).entries());
  const messages = [];
  if (fields.system.trim()) messages.push({ role: "system", content: fields.system });
  messages.push({ role: "user", content: fields.prompt });
  for (const side of document.querySelectorAll(".side")) {
    streamAnswer(side, {
      model: side.querySelector(".side-model").value,
      messages,
      stream: true,
      max_tokens: Number(fields.max_tokens) || 128,
      temperature: Number(fields.temperature) || 0,
    });
  }
}

async function streamAnswer(side, body) {
  const answer = side.querySelector(".answer");
  const meta = side.querySelector(".answer-meta");
  const rate = side.querySelector(".rate");
  answer.textContent = "";
  meta.textContent = "…";
  rate.hidden = true;
  rate.querySelector(".rated").textContent = "";
  rate.querySelector(".correction").value = "";
  side.dataset.completion = "";
  const began = performance.now();
  let firstToken = null;
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: { ...authHeaders(), "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    meta.textContent = "";
    answer.textContent = await response.json().then((b) => b.error.message, () => `${response.status}`);
    answer.classList.add("error");
    return;
  }
  answer.classList.remove("error");
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let finish = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    const events = buffer.split("\n\n");
    buffer = events.pop();
    for (const event of events) {
      const data = event.replace(/^data: /, "");
      if (data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) {
        answer.textContent += `\n[${chunk.error.message}]`;
        continue;
      }
      side.dataset.completion = chunk.id;
      for (const choice of chunk.choices) {
        if (choice.delta && choice.delta.content) {
          if (firstToken === null) firstToken = performance.now();
          answer.textContent += choice.delta.content;
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
  }
  const seconds = (performance.now() - began) / 1000;
  const first = firstToken === null ? "" : `, first token after ${((firstToken - began) / 1000).toFixed(2)} s`;
  meta.textContent = `${seconds.toFixed(2)} s${first}; finished: ${finish || "?"}`;
  rate.querySelector(".correction").value = answer.textContent;
  rate.hidden = !side.dataset.completion;
}

async function onPlaygroundClick(event) {
  const rating = event.target.closest(".rate-button");
  const save = event.target.closest(".save-correction");
  const toData = event.target.closest(".feedback-to-data");
  if (toData) return feedbackToData(toData);
  if (!rating && !save) return;
  const side = event.target.closest(".side");
  const correction = side.querySelector(".correction").value.trim();
  const body = { completion_id: side.dataset.completion, rating: save ? -1 : Number(rating.dataset.rating) };
  if (save) body.correction = correction;
  const response = await fetch("/v1/tuneforge/feedback", {
    method: "POST",
    headers: { ...authHeaders(), "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) return showError({ status: response.status, responseText: JSON.stringify(answer) });
  side.querySelector(".rated").textContent = save ? "Correction saved." : body.rating > 0 ? "Rated good." : "Rated bad.";
  document.body.dispatchEvent(new Event("feedback-saved"));
}

// The feedback export, uploaded as a new fine-tuning file: the Data page checks it like any other.
async function feedbackToData(button) {
  button.disabled = true;
  const response = await fetch(button.dataset.href, { headers: authHeaders() });
  button.disabled = false;
  if (!response.ok) return showError({ status: response.status, responseText: await response.text() });
  const text = await response.text();
  if (!text.trim()) return showError({ status: 400, responseText: JSON.stringify({ error: { message: "No feedback to export yet." } }) });
  upload(new File([text], "feedback-sft.jsonl", { type: "application/jsonl" }));
}

// ------------------------------------------------------------------------------------ operations
// The request log per model as three charts (uPlot, time on x); a series per model, and for requests
// also each model's errors (dashed).
const PALETTE = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"];
let opsCharts = [];

async function startOperations() {
  const section = document.getElementById("operations");
  if (!section || section.dataset.started) return;
  section.dataset.started = "1";
  const select = document.getElementById("operations-window");
  select.addEventListener("change", () => drawOperations(Number(select.value)));
  drawOperations(Number(select.value));
}

async function drawOperations(hours) {
  const response = await fetch(`/ui/series/operations?hours=${hours}`, { headers: authHeaders() });
  if (!response.ok) return showError({ status: response.status, responseText: await response.text() });
  const data = await response.json();
  opsCharts.forEach((chart) => chart.destroy());
  opsCharts = [];
  const models = Object.keys(data.models);
  const times = [...new Set(models.flatMap((m) => data.models[m].map((p) => p.time)))].sort((a, b) => a - b);
  const column = (model, pick) => {
    const byTime = new Map(data.models[model].map((p) => [p.time, p]));
    return times.map((t) => (byTime.has(t) ? pick(byTime.get(t)) : null));
  };
  const count = times.length;
  document.getElementById("ops-points").textContent = `${models.length} model(s), ${count} time buckets of ${data.bucket_seconds / 60} min`;
  const charts = {
    requests: (m) => [[`${m} requests`, column(m, (p) => p.requests), false], [`${m} errors`, column(m, (p) => p.errors), true]],
    p95_ms: (m) => [[`${m} p95 ms`, column(m, (p) => p.latency_ms.p95), false]],
    tokens: (m) => [[`${m} tokens`, column(m, (p) => p.prompt_tokens + p.completion_tokens), false]],
  };
  for (const element of document.querySelectorAll("#operations .chart")) {
    const series = models.flatMap((m, i) => charts[element.dataset.metric](m).map(([label, values, dashed]) => ({ label, values, dashed, colour: PALETTE[i % PALETTE.length] })));
    element.replaceChildren();
    opsCharts.push(
      new uPlot(
        {
          width: Math.max(280, element.clientWidth),
          height: 220,
          scales: { x: { time: true, range: [data.since, data.until] } },
          legend: { live: false },  // the names only: long model names with live values crowd a phone
          axes: [{}, { size: 60 }],
          series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.colour, width: 2, dash: s.dashed ? [6, 4] : undefined, points: { show: true } }))],
        },
        [times, ...series.map((s) => s.values)],
        element,
      ),
    );
  }
}
