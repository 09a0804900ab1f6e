// The page of detector serve --http-port: one image through both modes, side by side.
// Plain JavaScript, no build step, nothing from another host.
"use strict";

const $ = (id) => document.getElementById(id);
const MODE_NAMES = { fcn: "fully convolutional", sliding: "sliding windows" };
// viridis, sampled at nine stops: perceptually even, readable in grey
const VIRIDIS = [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
                 [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]];
const BOX_COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
                     "#bfef45", "#fabed4", "#469990", "#dcbeff", "#9a6324"];

// generation: bumped by every new image and every run, so that a run whose image was
// replaced while it waited for the server drops its answers instead of drawing them
const state = { model: null, blob: null, image: null, replies: {}, maps: null, generation: 0 };

function colour(v) {
  const x = Math.min(1, Math.max(0, v)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const t = x - i;
  return VIRIDIS[i].map((c, k) => Math.round(c + t * (VIRIDIS[i + 1][k] - c)));
}

function say(text, isError) {
  $("status").textContent = text;
  $("status").classList.toggle("error", Boolean(isError));
}

function headers() {
  const token = $("token").value.trim();
  return token ? { Authorization: "Bearer " + token } : {};
}

async function call(url, options) {
  const response = await fetch(url, { ...options, headers: { ...headers(), ...(options && options.headers) } });
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try {
      const body = await response.json();
      message = `${response.status} ${body.code}: ${body.error}`;
    } catch (e) { /* not JSON: keep the status line */ }
    throw new Error(message);
  }
  return response;
}

async function loadModel() {
  try {
    const info = await (await call("/v1/model")).json();
    state.model = info;
    const objects = info.classes.filter((c) => c !== info.background);
    $("model").textContent = `${info.model.name} (${info.model.checksum.slice(0, 12)}): ` +
      `${objects.length} classes (${objects.join(", ")}), a ${info.window_width}x${info.window_height} window, ` +
      `stride ${info.stride}, ${info.channels === 3 ? "colour" : "gray"}`;
    const select = $("heat-class");
    select.replaceChildren(new Option("any object (the best class)", "any"),
      ...info.classes.map((c, i) => new Option(c === info.background ? `${c} (no object)` : c, String(i))));
  } catch (error) {
    $("model").textContent = "The model's description could not be read: " + error.message;
  }
}

function useBlob(blob, name) {
  if (!/^image\/(png|jpeg)$/.test(blob.type)) {
    say(`${name} is ${blob.type || "of no known type"}: choose a PNG or JPEG image.`, true);
    return;
  }
  const url = URL.createObjectURL(blob);
  const image = new Image();
  image.onload = () => {
    state.generation++;
    state.blob = blob;
    state.image = image;
    state.replies = {};
    state.maps = null;
    $("timings").tBodies[0].replaceChildren();
    $("detections").tBodies[0].replaceChildren();
    $("speedup").textContent = "";
    $("heat-level").replaceChildren();
    $("detect").disabled = false;
    draw();
    say(`${name}: ${image.naturalWidth}x${image.naturalHeight}. Press Detect.`);
  };
  image.onerror = () => say(`${name} could not be read as an image.`, true);
  image.src = url;
}

async function sample() {
  const seed = Math.max(0, Math.floor(Number($("seed").value) || 0));
  say("Drawing a sample scene…");
  try {
    const blob = await (await call(`/v1/sample?seed=${seed}`)).blob();
    useBlob(blob, `sample scene ${seed}`);
  } catch (error) {
    say("The sample scene failed: " + error.message, true);
  }
}

function query(mode, maps) {
  const params = new URLSearchParams({ mode });
  const threshold = $("threshold").value.trim();
  const stride = $("stride").value.trim();
  if (threshold !== "") params.set("threshold", threshold);
  if (stride !== "") params.set("stride", stride);
  if (maps) params.set("maps", "true");
  return params;
}

async function detect() {
  if (!state.blob) return;
  const chosen = $("mode").value;
  const modes = chosen === "both" ? ["fcn", "sliding"] : [chosen];
  const generation = ++state.generation;
  const blob = state.blob;
  $("detect").disabled = true;
  state.replies = {};
  try {
    if (!state.model) await loadModel();  // a token typed since the page loaded
    // one after the other, so that neither mode's time includes the other's
    for (const mode of modes) {
      say(`Running ${MODE_NAMES[mode]}…`);
      const maps = mode === modes[0];
      const response = await call("/v1/detect?" + query(mode, maps), {
        method: "POST", body: blob, headers: { "Content-Type": blob.type } });
      const reply = await response.json();
      if (generation !== state.generation) return;  // another image or run took over
      state.replies[mode] = reply;
      if (maps) state.maps = decodeMaps(reply.score_maps);
    }
    showLevels();
    showResults(modes);
    draw();
    say(`Done: ${state.replies[modes[0]].detections.length} detections.`);
  } catch (error) {
    if (generation === state.generation) say("Detection failed: " + error.message, true);
  } finally {
    $("detect").disabled = false;
  }
}

function decodeMaps(maps) {
  return (maps || []).map((m) => {
    const bytes = Uint8Array.from(atob(m.data), (c) => c.charCodeAt(0));
    return { ...m, values: new Float32Array(bytes.buffer) };  // little-endian, as the server sends
  });
}

function showLevels() {
  const select = $("heat-level");
  const levels = state.maps || [];
  let nearest = 0;
  levels.forEach((m, i) => { if (Math.abs(Math.log(m.scale)) < Math.abs(Math.log(levels[nearest].scale))) nearest = i; });
  select.replaceChildren(...levels.map((m, i) =>
    new Option(`${i + 1}: scale ${m.scale.toFixed(2)}, ${m.shape[2]}x${m.shape[1]}`, String(i))));
  if (levels.length) select.value = String(nearest);
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function showResults(modes) {
  const rows = modes.map((mode) => {
    const r = state.replies[mode];
    const tr = document.createElement("tr");
    tr.dataset.mode = mode;
    tr.append(cell(MODE_NAMES[mode]), cell(r.timings_ms.inference_ms.toFixed(1)),
              cell(r.timings_ms.total_ms.toFixed(1)), cell(String(r.detections.length)));
    return tr;
  });
  $("timings").tBodies[0].replaceChildren(...rows);
  const fcn = state.replies.fcn, sliding = state.replies.sliding;
  $("speedup").textContent = fcn && sliding
    ? `The fully convolutional net is ${(sliding.timings_ms.inference_ms / fcn.timings_ms.inference_ms).toFixed(1)}x ` +
      "faster than sliding windows on the same windows."
    : "";
  const shown = state.replies[modes[0]];
  $("detections").tBodies[0].replaceChildren(...shown.detections.map((d, i) => {
    const tr = document.createElement("tr");
    tr.append(cell(String(i + 1)), cell(d.label), cell(d.score.toFixed(2)),
              cell(d.box.map((v) => v.toFixed(0)).join(", ")));
    return tr;
  }));
}

function heatValues(map) {
  const [classes, h, w] = map.shape;
  const chosen = $("heat-class").value;
  const out = new Float32Array(h * w);
  if (chosen !== "any") {
    out.set(map.values.subarray(Number(chosen) * h * w, (Number(chosen) + 1) * h * w));
    return out;
  }
  const background = state.model ? state.model.classes.indexOf(state.model.background) : -1;
  for (let c = 0; c < classes; c++) {
    if (c === background) continue;
    const plane = map.values.subarray(c * h * w, (c + 1) * h * w);
    for (let i = 0; i < h * w; i++) if (plane[i] > out[i]) out[i] = plane[i];
  }
  return out;
}

function drawHeat(ctx) {
  const map = (state.maps || [])[Number($("heat-level").value)];
  if (!$("heat").checked || !map || !state.model) return;
  const [, h, w] = map.shape;
  const values = heatValues(map);
  const tile = document.createElement("canvas");
  tile.width = w;
  tile.height = h;
  const pixels = tile.getContext("2d").createImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    const [r, g, b] = colour(values[i]);
    pixels.data.set([r, g, b, Math.round(60 + 150 * Math.min(1, Math.max(0, values[i])))], 4 * i);  // faint where low
  }
  tile.getContext("2d").putImageData(pixels, 0, 0);
  // window (r, c) covers the level from (r, c) * stride - pad; its cell is drawn around its centre
  const s = map.scale, step = map.stride / s;
  const x0 = (state.model.window_width / 2 - map.pad - map.stride / 2) / s;
  const y0 = (state.model.window_height / 2 - map.pad - map.stride / 2) / s;
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(tile, x0, y0, w * step, h * step);
}

function drawBoxes(ctx) {
  const reply = state.replies.fcn || state.replies.sliding;
  if (!reply) return;
  const classes = state.model ? state.model.classes : [];
  ctx.lineWidth = Math.max(2, state.image.naturalWidth / 400);
  ctx.font = `${Math.max(12, state.image.naturalWidth / 50)}px sans-serif`;
  for (const d of reply.detections) {
    const [x0, y0, x1, y1] = d.box;
    ctx.strokeStyle = ctx.fillStyle = BOX_COLOURS[Math.max(0, classes.indexOf(d.label)) % BOX_COLOURS.length];
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    const text = `${d.label} ${d.score.toFixed(2)}`;
    const width = ctx.measureText(text).width + 6;
    ctx.fillRect(x0, Math.max(0, y0 - parseInt(ctx.font, 10) - 4), width, parseInt(ctx.font, 10) + 4);
    ctx.fillStyle = "#fff";
    ctx.fillText(text, x0 + 3, Math.max(parseInt(ctx.font, 10), y0 - 4));
  }
}

function draw() {
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  if (!state.image) return;
  canvas.width = state.image.naturalWidth;
  canvas.height = state.image.naturalHeight;
  ctx.drawImage(state.image, 0, 0);
  drawHeat(ctx);
  drawBoxes(ctx);
}

function drawColourBar() {
  const bar = $("colorbar");
  const ctx = bar.getContext("2d");
  for (let x = 0; x < bar.width; x++) {
    const [r, g, b] = colour(x / (bar.width - 1));
    ctx.fillStyle = `rgb(${r},${g},${b})`;
    ctx.fillRect(x, 0, 1, bar.height);
  }
}

function setUp() {
  $("file").addEventListener("change", (e) => { if (e.target.files[0]) useBlob(e.target.files[0], e.target.files[0].name); });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) useBlob(file, file.name);
  });
  $("sample").addEventListener("click", sample);
  $("detect").addEventListener("click", detect);
  $("token").addEventListener("change", loadModel);
  for (const id of ["heat", "heat-class", "heat-level"]) $(id).addEventListener("change", draw);
  drawColourBar();
  loadModel();
}

setUp();
