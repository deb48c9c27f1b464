// The service's page: submit an image with options, follow the job, show and offer its results.
// Plain JS, no build step. Talks to the same origin's /v1 API; a bearer token (if the server wants one) is kept
// in localStorage and sent with every request, media included (fetched as blobs).
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 300;
const RESULTS = ["video.mp4", "video.gif", "contact_sheet.png", "info.json", "frames.zip", "input.png"];
let current = null;

function headers() {
  const token = localStorage.getItem("sv3d-token") || "";
  return token ? { Authorization: "Bearer " + token } : {};
}

async function api(method, path, body) {
  const r = await fetch(path, { method, body, headers: headers() });
  if (r.status === 401) {
    $("token-row").hidden = false;
    throw new Error("this server needs a token: enter it and submit again");
  }
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  return r;
}

function showError(e) {
  $("error").textContent = e ? String(e.message || e) : "";
  $("error").hidden = !e;
}

async function blobUrl(path) {
  const r = await api("GET", path);
  return URL.createObjectURL(await r.blob());
}

async function init() {
  $("token").value = localStorage.getItem("sv3d-token") || "";
  try {
    const h = await (await fetch("/healthz")).json();
    $("server").textContent = `${h.variant} · ${h.backend} · ${h.resolution} px · ${h.num_frames} frames · ` +
      `queue ${h.queue}/${h.queue_size}`;
    $("camera").hidden = !h.camera;
  } catch (e) {
    $("server").textContent = "server unreachable";
  }
}

$("image").addEventListener("change", () => {
  const f = $("image").files[0];
  $("preview").hidden = !f;
  if (f) $("preview").src = URL.createObjectURL(f);
});

$("token").addEventListener("change", () => localStorage.setItem("sv3d-token", $("token").value.trim()));

$("job-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  showError(null);
  $("result").hidden = true;
  const form = new FormData($("job-form"));
  if ($("camera").hidden) { form.delete("elevation"); form.delete("orbit"); }
  $("submit").disabled = true;
  try {
    const r = await api("POST", "/v1/jobs", form);
    current = (await r.json()).id;
    $("job").hidden = false;
    $("cancel").hidden = false;
    follow(current);
  } catch (e) {
    showError(e);
    $("submit").disabled = false;
  }
});

$("cancel").addEventListener("click", async () => {
  if (!current) return;
  try { await api("DELETE", "/v1/jobs/" + current); } catch (e) { showError(e); }
});

function describe(job) {
  if (job.state === "queued") return `queued, position ${job.position}`;
  if (job.state === "running") {
    if (!job.num_steps) return "running: encoding the image";
    const eta = job.eta_s == null ? "" : `, about ${job.eta_s.toFixed(1)} s left`;
    const last = job.last_step_s == null ? "" : `, last step ${job.last_step_s.toFixed(3)} s`;
    return `running: step ${job.step} of ${job.num_steps}${last}${eta}`;
  }
  if (job.state === "failed") return "failed: " + (job.error || "unknown reason");
  if (job.state === "done") return `done: ${job.num_steps} steps, ${(job.finished - job.started).toFixed(2)} s`;
  return job.state;
}

async function follow(id) {
  let job;
  try {
    job = await (await api("GET", "/v1/jobs/" + id)).json();
  } catch (e) {
    showError(e);
    $("submit").disabled = false;
    return;
  }
  if (id !== current) return;
  $("status").textContent = describe(job);
  $("status").dataset.state = job.state;
  $("progress").value = job.state === "done" ? 1 : (job.num_steps ? job.step / job.num_steps : 0);
  if (job.state === "queued" || job.state === "running") {
    setTimeout(() => follow(id), POLL_MS);
    return;
  }
  $("cancel").hidden = true;
  $("submit").disabled = false;
  if (job.state === "done") await showResult(job);
}

async function showResult(job) {
  try {
    const base = `/v1/jobs/${job.id}/result/`;
    $("video").src = await blobUrl(base + "video.mp4");
    $("sheet").src = await blobUrl(base + "contact_sheet.png");
    const info = await (await api("GET", base + "info.json")).json();
    const stages = info.timings.stages;
    const total = stages.total || Object.values(stages).reduce((a, b) => a + b, 0);
    const body = $("latency").querySelector("tbody");
    body.innerHTML = "";
    for (const [name, s] of Object.entries(stages)) {
      const row = body.insertRow();
      row.insertCell().textContent = name;
      row.insertCell().textContent = s.toFixed(4);
      row.insertCell().textContent = (100 * s / total).toFixed(1) + " %";
    }
    const list = $("downloads");
    list.innerHTML = "";
    for (const name of RESULTS) {
      const a = document.createElement("a");
      a.href = base + name;
      a.textContent = name;
      a.addEventListener("click", async (ev) => {      // with the token: fetch, then save the blob
        ev.preventDefault();
        const link = document.createElement("a");
        link.href = await blobUrl(base + name);
        link.download = `${job.id}-${name}`;
        link.click();
      });
      list.appendChild(document.createElement("li")).appendChild(a);
    }
    $("result").hidden = false;
  } catch (e) {
    showError(e);
  }
}

init();
