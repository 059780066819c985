// The playground's memory: the server's run history (GET /v1/moa/runs), a past run
// opened with its layer cards, and "compare", which asks one model (or another mixture)
// the same conversation so the mixture's answer can be read next to it.
// Everything a model or a user wrote is put in the page as text (el(), textContent).
"use strict";

let refreshTimers = [];

async function loadRuns() {
  const list = $("runs-list");
  const empty = $("runs-empty");
  let response;
  try {
    const query = new URLSearchParams({ limit: "50" });
    const words = $("runs-search").value.trim();
    if (words) query.set("q", words);  // SQLite full-text syntax: words, "a phrase", OR, prefix*
    response = await fetch("/v1/moa/runs?" + query, { headers: headers() });
  } catch (error) {
    empty.textContent = "The history could not be read: " + String(error.message || error);
    empty.hidden = false;
    return;
  }
  if (!response.ok) {
    list.replaceChildren();
    empty.textContent = response.status === 401 ? "Enter the API key to see the history." : await errorMessage(response);
    empty.hidden = false;
    return;
  }
  const runs = (await response.json()).data;
  list.replaceChildren(...runs.map(runEntry));
  empty.textContent = $("runs-search").value.trim() ? "No run matches." : "No runs recorded yet.";
  empty.hidden = runs.length > 0;
  markOpened();
}

// The history is written by a background thread after the answer is sent, so a run
// just made shows up a moment later: look again shortly after each request.
function refreshRunsSoon() {
  refreshTimers.forEach(clearTimeout);
  refreshTimers = [400, 2000].map((delay) => setTimeout(loadRuns, delay));
}

function runEntry(run) {
  const item = el("li");
  const failed = run.failures > 0 || run.cancelled;
  const button = el("button", "run" + (failed ? " failed" : ""));
  button.type = "button";
  button.dataset.id = run.id;
  const when = new Date(run.created * 1000);
  button.append(
    el("span", "when", when.toLocaleString()),
    el("span", "mixture", run.mixture),
    el("span", "question", run.content === "none" ? "(text not recorded)" : firstWords(run.question)),
    el("span", "meta", runMeta(run)),
  );
  button.title = "Run " + run.id + " (" + run.source + ")";
  button.addEventListener("click", () => openRun(run.id));
  item.append(button);
  return item;
}

function firstWords(text) {
  const flat = (text || "").replace(/\s+/g, " ").trim();
  return flat.length > 90 ? flat.slice(0, 90) + "…" : flat;
}

function runMeta(run) {
  const parts = [run.prompt_tokens + run.completion_tokens + " tokens", run.latency_s.toFixed(2) + " s"];
  if (run.cost !== null) parts.push("$" + run.cost.toFixed(6));
  if (run.error) parts.push("error");
  else if (run.cancelled) parts.push("cancelled");
  if (run.failures) parts.push(run.failures + " failed");
  return parts.join(" · ");
}

function markOpened() {
  for (const button of document.querySelectorAll("#runs-list .run")) {
    button.classList.toggle("opened", !!state.opened && button.dataset.id === state.opened);
  }
}

// -- a past run -------------------------------------------------------------------------

async function openRun(id) {
  if ($("send").disabled) {
    notice("Wait for the running request to finish (or stop it) before opening a past run.", true);
    return;
  }
  const response = await fetch("/v1/moa/runs/" + encodeURIComponent(id), { headers: headers() });
  if (!response.ok) {
    notice(await errorMessage(response), true);
    return;
  }
  notice("");
  const run = await response.json();
  state.opened = run.id;
  markOpened();

  // The conversation as the mixture saw it; a follow-up question continues it.
  state.history = run.conversation.slice();
  $("messages").replaceChildren();
  for (const message of run.conversation) addMessage(message.role, message.content);
  if (run.content === "none") {
    addMessage("system", "This run was recorded without its text (--log-content none).", "history");
  } else if (run.output !== null) {
    addMessage("assistant", run.output, run.mixture);
    state.history.push({ role: "assistant", content: run.output });
  } else {
    addMessage("error", run.error || (run.cancelled ? "cancelled" : "no answer"));
  }
  if ([...$("model").options].some((o) => o.value === run.mixture)) $("model").value = run.mixture;

  drawStoredCalls(run.calls);
  const totals = {
    usage: { calls: run.calls.reduce((n, c) => n + c.usage.calls, 0), prompt_tokens: run.prompt_tokens, completion_tokens: run.completion_tokens },
    latency_s: run.latency_s,
    ttft_s: run.ttft_s,
    cost: run.cost,
  };
  showTotals(totals);
  $("run-info").textContent = "Run " + run.id.slice(0, 12) + " · " + new Date(run.created * 1000).toLocaleString() + " · from " + run.source;
  const aggregator = run.calls.filter((c) => c.kind === "aggregator").pop();
  showRun({
    mixture: run.mixture,
    messages: run.conversation,
    output: run.output,
    totals,
    models: run.calls.map((c) => c.model),
    aggregatorModel: aggregator ? aggregator.model : null,
  });
}

// The stored calls drawn with the live cards' own functions, one section per layer.
function drawStoredCalls(calls) {
  resetGraph();
  const groups = new Map();
  for (const call of calls) {
    const key = call.kind === "layer" ? String(call.layer) : call.kind;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(call);
  }
  for (const [key, group] of groups) {
    const role = key === "aggregator" ? "aggregator" : key === "extra" ? "extra" : "proposer";
    layerStarted({ layer: key, role, agents: group.map((c) => c.agent) }, key === "extra" ? "Other calls" : null);
    group.forEach((call, index) => agentFinished({ ...call, layer: key, index }));
    const failed = group.filter((c) => !c.ok).length;
    layerDone({ layer: key, ok: group.length - failed, failed });
  }
}

// -- compare ----------------------------------------------------------------------------

// The run whose answer a comparison sits next to (null: nothing to compare).
function showRun(run) {
  state.shown = run && run.messages.length && run.output !== null ? run : null;
  if (!run) {
    state.opened = null;
    $("run-info").textContent = "";
    markOpened();
  }
  $("comparison").hidden = true;
  $("compare-bar").hidden = !state.shown;
  $("compare").disabled = !state.shown || $("send").disabled;
  if (!state.shown) return;
  const choices = [...new Set([run.aggregatorModel, ...run.models, ...state.models])].filter((m) => m && m !== run.mixture);
  $("compare-models").replaceChildren(...choices.map((m) => {
    const option = el("option");
    option.value = m;
    return option;
  }));
  const input = $("compare-model");
  if (!input.value || input.dataset.auto === "1") {
    input.value = run.aggregatorModel || choices[0] || "";
    input.dataset.auto = "1";
  }
}

function fillSide(side, title, text, stats) {
  side.querySelector("h3").textContent = title;
  side.querySelector(".text").textContent = text;
  side.querySelector(".stats").textContent = stats;
}

async function compare() {
  const target = $("compare-model").value.trim();
  const shown = state.shown;
  if (!target || !shown || $("send").disabled) return;
  $("comparison").hidden = false;
  fillSide($("comparison").querySelector(".side.mixture"), shown.mixture, shown.output, shown.totals ? totalsText(shown.totals) : "");
  const side = $("comparison").querySelector(".side.single");
  side.className = "side single working";
  fillSide(side, target, "", "");
  state.controller = new AbortController();
  busy(true);
  try {
    await streamChat(target, shown.messages, { progress: true }, (soFar) => {
      side.querySelector(".text").textContent = soFar;
    }, (event) => {
      if (event.type === "done") side.querySelector(".stats").textContent = totalsText(event);
    });
    side.classList.add("done");
  } catch (error) {
    side.classList.add("failed");
    side.querySelector(".text").textContent = error.name === "AbortError" ? "stopped" : String(error.message || error);
  } finally {
    side.classList.remove("working");
    busy(false);
    refreshRunsSoon();
  }
}

$("compare").addEventListener("click", compare);
$("compare-model").addEventListener("input", () => { delete $("compare-model").dataset.auto; });
$("runs-refresh").addEventListener("click", loadRuns);
$("runs-search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  loadRuns();
});
loadRuns();
