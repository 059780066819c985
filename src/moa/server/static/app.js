// The moa playground: a multi-turn chat whose answer is drawn as the mixture works.
// It speaks the server's own OpenAI-compatible API, asking for progress chunks
// ("moa": {"agent_deltas": true}) so every agent's card fills in as it writes.
// runs.js adds the run history and the comparison with a single model.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { history: [], controller: null, cards: new Map(), answerCard: null, live: null, shown: null, models: [] };

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;  // model output is text, never HTML
  return node;
}

function headers() {
  const out = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) out.Authorization = "Bearer " + key;
  return out;
}

function notice(message, isError) {
  const box = $("notice");
  box.hidden = !message;
  box.textContent = message || "";
  box.className = isError ? "error" : "";
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body.error && body.error.message) return body.error.message;
  } catch (ignored) { /* not JSON */ }
  return "HTTP " + response.status;
}

async function loadModels() {
  const response = await fetch("/v1/models", { headers: headers() });
  if (!response.ok) {
    notice(await errorMessage(response) + (response.status === 401 ? " (enter the API key above)" : ""), true);
    return;
  }
  notice("");
  const select = $("model");
  const previous = select.value || sessionStorage.getItem("moa-model");
  select.replaceChildren();
  state.models = [];
  for (const model of (await response.json()).data) {
    state.models.push(model.id);
    const option = el("option", "", model.id);
    option.value = model.id;
    const shape = model.moa;
    if (shape) option.title = shape.layers.map((l) => l.join(", ")).join(" → ") + " → " + shape.aggregator;
    if (shape && shape.available === false) {
      option.textContent += " (unavailable)";
      option.title = shape.problem;
    }
    select.append(option);
  }
  if (previous && [...select.options].some((o) => o.value === previous)) select.value = previous;
}

// -- the conversation ------------------------------------------------------------------

function addMessage(role, text, who) {
  const item = el("li", "message " + role);
  if (!who) who = role === "user" ? "you" : role === "assistant" ? $("model").value : role === "system" ? "system" : "error";
  item.append(el("span", "who", who));
  const body = el("span", "body", text);
  item.append(body);
  $("messages").append(item);
  item.scrollIntoView({ block: "end" });
  return { item, body };
}

// -- the graph -------------------------------------------------------------------------

function resetGraph() {
  $("layers").replaceChildren();
  $("totals").textContent = "";
  $("graph-empty").hidden = false;
  state.cards.clear();
  state.answerCard = null;
}

function layerSection(layer, role) {
  return [...$("layers").querySelectorAll(".layer")].find(
    (section) => section.dataset.layer === String(layer) && (!role || section.classList.contains(role)),
  );
}

// A layer drawn in waves (an adaptive vote) starts once per wave: a later wave
// (first_index > 0) adds its cards to the layer's section, after the ones it has.
function layerStarted(event, heading) {
  $("graph-empty").hidden = true;
  const first = event.first_index || 0;
  let section = first ? layerSection(event.layer, event.role) : null;
  if (!section) {
    section = el("div", "layer " + event.role);
    section.dataset.layer = event.layer;
    const title = el("h3", "", heading || (event.role === "aggregator" ? "Aggregator" : "Layer " + event.layer));
    title.append(el("span", "tally"));
    section.append(title, el("div", "cards"));
    $("layers").append(section);
  }
  const cards = section.querySelector(".cards");
  event.agents.forEach((label, offset) => {
    const index = first + offset;
    const card = el("article", "agent-card working");
    card.dataset.layer = event.layer;
    card.dataset.index = index;
    card.append(el("span", "state", "working…"), el("div", "name", label), el("div", "text"), el("div", "stats"));
    cards.append(card);
    state.cards.set(event.layer + ":" + index, card);
    if (event.role === "aggregator") state.answerCard = card;
  });
}

function cardOf(event) {
  return state.cards.get(event.layer + ":" + event.index);
}

function agentFinished(event) {
  const card = cardOf(event);
  if (!card) return;
  card.classList.remove("working");
  const stats = [event.latency_s.toFixed(2) + " s"];
  if (event.usage) stats.push(event.usage.completion_tokens + " tokens");
  if (event.attempts > 1) stats.push(event.attempts + " attempts");
  card.querySelector(".stats").textContent = stats.join(" · ");
  if (event.ok) {
    card.classList.add("done");
    card.querySelector(".state").textContent = event.partial ? "partial" : "done";
    card.querySelector(".text").textContent = event.output;
  } else {
    card.classList.add("failed");
    card.querySelector(".state").textContent = "failed";
    card.append(el("div", "error", event.error || "failed"));
  }
}

function layerDone(event) {
  const section = layerSection(event.layer);
  const tally = section && section.querySelector(".tally");
  if (tally) tally.textContent = event.ok + " answered" + (event.failed ? ", " + event.failed + " failed" : "");
}

function totalsText(done) {
  const usage = done.usage;
  const parts = [usage.calls + " calls", usage.prompt_tokens + " prompt + " + usage.completion_tokens + " completion tokens", done.latency_s.toFixed(2) + " s"];
  if (done.ttft_s !== null) parts.push("first token " + done.ttft_s.toFixed(2) + " s");
  if (done.cost !== null && done.cost !== undefined) parts.push("$" + done.cost.toFixed(6));
  return parts.join(" · ");
}

function showTotals(done) {
  $("totals").textContent = totalsText(done);
}

function onProgress(event) {
  switch (event.type) {
    case "layer_started": layerStarted(event); break;
    case "agent_delta": {
      const card = cardOf(event);
      if (card) card.querySelector(".text").textContent += event.text;
      break;
    }
    case "agent_done":
    case "agent_failed":
      agentFinished(event);
      if (state.live) state.live.models.push(event.model);
      if (state.live && event.role === "aggregator") state.live.aggregatorModel = event.model;
      break;
    case "layer_done": layerDone(event); break;
    case "done":
      showTotals(event);
      if (state.live) state.live.totals = event;
      break;
  }
}

// -- one request -----------------------------------------------------------------------

async function* serverEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (data === "[DONE]") return;
      if (data) yield JSON.parse(data);
    }
  }
}

// A streamed chat completion: onText gets the answer so far, onMoa each progress event.
// Returns the whole answer; throws with the server's message on an error.
async function streamChat(model, messages, moa, onText, onMoa) {
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: headers(),
    signal: state.controller.signal,
    body: JSON.stringify({
      model,
      messages,
      stream: true,
      stream_options: { include_usage: true },
      moa,
    }),
  });
  if (!response.ok) throw new Error(await errorMessage(response));
  let text = "";
  for await (const chunk of serverEvents(response)) {
    if (chunk.error) throw new Error(chunk.error.message);
    if (chunk.moa) onMoa(chunk.moa);
    const choice = chunk.choices && chunk.choices[0];
    const piece = choice && choice.delta && choice.delta.content;
    if (piece) {
      text += piece;
      onText(text);
    }
  }
  return text;
}

async function ask(text) {
  state.history.push({ role: "user", content: text });
  addMessage("user", text);
  resetGraph();
  showRun(null);
  const sent = state.history.slice();
  state.live = { mixture: $("model").value, messages: sent, models: [], aggregatorModel: null, totals: null };
  const answer = addMessage("assistant", "");
  answer.item.classList.add("streaming");
  state.controller = new AbortController();
  busy(true);
  try {
    const reply = await streamChat($("model").value, state.history, { agent_deltas: true }, (soFar) => {
      answer.body.textContent = soFar;
      if (state.answerCard) state.answerCard.querySelector(".text").textContent = soFar;
    }, onProgress);
    state.history.push({ role: "assistant", content: reply });
    showRun({ ...state.live, output: reply });
  } catch (error) {
    state.history.pop();  // the question stays visible; it can be asked again
    answer.item.className = "message error";
    answer.body.textContent = error.name === "AbortError" ? "stopped" : String(error.message || error);
  } finally {
    state.live = null;
    answer.item.classList.remove("streaming");
    busy(false);
    refreshRunsSoon();
  }
}

function busy(on) {
  $("send").disabled = on;
  $("compare").disabled = on || !state.shown;
  $("stop").disabled = !on;
  $("model").disabled = on;
}

// -- wiring ----------------------------------------------------------------------------

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || $("send").disabled) return;
  $("prompt").value = "";
  ask(text);
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});
$("stop").addEventListener("click", () => state.controller && state.controller.abort());
$("new-chat").addEventListener("click", () => {
  if (state.controller) state.controller.abort();
  state.history = [];
  $("messages").replaceChildren();
  resetGraph();
  showRun(null);
});
$("model").addEventListener("change", () => sessionStorage.setItem("moa-model", $("model").value));
$("api-key").value = sessionStorage.getItem("moa-key") || "";
$("api-key").addEventListener("change", () => {
  sessionStorage.setItem("moa-key", $("api-key").value);
  loadModels();
  loadRuns();
});
loadModels();  // runs.js loads the history
