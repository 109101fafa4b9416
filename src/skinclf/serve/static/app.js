// The page of `skinclf serve`: pick or drop an image, POST it to /predict, show the answer.
// No build step, no external script; every text from the server goes in through textContent.
"use strict";

const HEADLINES = {
  unfamiliar: "This does not look like a dermoscopic image",
  uncertain: "Uncertain \u2014 refer to a dermatologist",
};
const $ = (id) => document.getElementById(id);

function show(id, visible) { $(id).hidden = !visible; }

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function percent(p) { return (100 * p).toFixed(1) + " %"; }

function renderVerdict(result, names, note) {
  const verdict = $("verdict");
  verdict.replaceChildren();
  verdict.classList.toggle("abstain", result.abstain);
  if (result.abstain) {
    verdict.append(element("p", "headline", HEADLINES[result.abstain_reason] || HEADLINES.uncertain));
    verdict.append(element("p", "why", note && result.abstain_reason !== "unfamiliar"
      ? "No diagnosis is given: " + note + "."
      : result.abstain_reason === "uncertain"
      ? "The model is not confident enough on this image to name a class, so it gives no diagnosis."
      : "No diagnosis is given: " + (result.message || "the model abstained") + "."));
    return;
  }
  const top = result.top_class;
  const name = names[top] ? names[top] + " (" + top + ")" : top;
  verdict.append(element("p", "headline", "Most likely: " + name + ", " +
    percent(result.probabilities[top])));
  verdict.append(element("p", "why", note
    ? "Caution: " + note + "; nothing checked this answer's confidence, and it is not a " +
      "diagnosis."
    : "The model is confident enough to answer here; this is still not a diagnosis."));
}

function renderBars(result, classes, names) {
  const list = $("probs");
  list.replaceChildren();
  list.classList.toggle("muted", result.abstain);
  $("probs-title").textContent = result.abstain
    ? "Model output (not used: the model abstained)" : "Class probabilities";
  for (const cls of classes) {
    const p = result.probabilities[cls];
    const item = element("li");
    item.dataset.class = cls;
    item.dataset.probability = String(p);
    const label = element("span", "name", cls + " \u00b7 " + (names[cls] || cls));
    label.title = names[cls] || cls;
    const track = element("span", "track");
    const bar = element("span", "bar");
    bar.style.display = "block";
    bar.style.width = Math.max(0, Math.min(100, 100 * p)).toFixed(2) + "%";
    track.append(bar);
    item.append(label, track, element("span", "value", percent(p)));
    list.append(item);
  }
}

function render(body, result) {
  const names = body.class_names || {};
  const section = $("result");
  section.dataset.abstain = String(result.abstain);
  section.dataset.reason = result.abstain_reason || "";
  renderVerdict(result, names, body.policy_note || "");
  renderBars(result, body.classes || Object.keys(result.probabilities), names);
  $("details").textContent = "model " + result.model_id + ", skinclf " + result.skinclf_version;
  $("status").textContent = "Result for " + result.image;
  show("result", true);
}

function fail(message) {
  $("error").textContent = message;
  show("error", true);
  show("result", false);
}

async function analyse(file) {
  show("error", false);
  $("preview").src = URL.createObjectURL(file);
  $("filename").textContent = file.name;
  show("figure", true);
  $("status").textContent = "Analysing " + file.name + " \u2026";
  const form = new FormData();
  form.append("files", file, file.name);
  let response, body;
  try {
    response = await fetch("/predict", { method: "POST", body: form });
    body = await response.json();
  } catch (err) {
    fail("The server cannot be reached or sent no readable answer (" + err + ").");
    return;
  }
  const result = body.results && body.results[0];
  if (!response.ok || !result || result.error) {
    fail((result && result.message) || body.message || "The server refused the image.");
    return;
  }
  render(body, result);
}

function setUp() {
  const input = $("file");
  const drop = $("drop");
  input.addEventListener("change", () => { if (input.files.length) analyse(input.files[0]); });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer.files.length) analyse(e.dataTransfer.files[0]);
  });
  fetch("/health").then((r) => r.json()).then((h) => {
    $("model-id").textContent = "model " + h.model_id;
  }).catch(() => {});
}

document.addEventListener("DOMContentLoaded", setUp);
