// The operator page's script: polls status.json every 2 s and renders it. No framework, no build step.
// Every value from the worker goes through textContent (never innerHTML): ids and reasons are data, not markup.
"use strict";

const POLL_MS = 2000;

function byId(id) {
  return document.getElementById(id);
}

function setText(id, value) {
  byId(id).textContent = value;
}

function fixed(value, digits) {
  return typeof value === "number" ? value.toFixed(digits) : "-";
}

function cell(row, text, className) {
  const td = document.createElement("td");
  if (text !== undefined) td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function emptyRow(body, columns, text) {
  const row = document.createElement("tr");
  const td = cell(row, text, "muted");
  td.colSpan = columns;
  body.appendChild(row);
}

function renderDeadLetters(rows) {
  const body = byId("dead-letters");
  body.replaceChildren();
  if (!rows.length) return emptyRow(body, 3, "none");
  for (const r of rows) {
    const row = document.createElement("tr");
    row.dataset.code = r.error;
    cell(row, r.input);
    cell(row, r.error);
    cell(row, String(r.count), "num");
    body.appendChild(row);
  }
}

function renderRules(rules) {
  setText("rule-set-version", String(rules.version));
  setText("rule-set-digest", rules.digest);
  const body = byId("rules");
  body.replaceChildren();
  if (!rules.rules.length) return emptyRow(body, 7, "none");
  for (const r of rules.rules) {
    const row = document.createElement("tr");
    row.dataset.rule = r.id;
    cell(row, r.id, "id").title = r.description;
    cell(row, r.action === "score" ? "score " + (r.score > 0 ? "+" : "") + r.score : r.action);
    cell(row, r.state);
    cell(row, String(r.priority), "num");
    cell(row, r.expression, "id");
    cell(row, String(r.hits_window), "num");
    cell(row, String(r.hits_total), "num");
    body.appendChild(row);
  }
}

// Transactions whose feature list the operator opened: kept open across the 2 s re-renders.
const openFeatures = new Set();

function timeOf(iso) {
  return typeof iso === "string" && iso.length > 19 ? iso.slice(11, 23) : iso;
}

function featureList(p) {
  const details = document.createElement("details");
  details.open = openFeatures.has(p.tx_id);
  details.addEventListener("toggle", () => {
    if (details.open) openFeatures.add(p.tx_id);
    else openFeatures.delete(p.tx_id);
  });
  const entries = Object.entries(p.features);
  const summary = document.createElement("summary");
  summary.textContent = entries.length + " features";
  const list = document.createElement("div");
  list.className = "features";
  list.textContent = entries
    .map(([name, value]) => name + "=" + (typeof value === "number" ? +value.toFixed(3) : value))
    .join(", ");
  details.append(summary, list);
  return details;
}

function renderHighScores(predictions) {
  const body = byId("high-scores");
  body.replaceChildren();
  if (!predictions.length) return emptyRow(body, 6, "none yet");
  for (const p of predictions) {
    const row = document.createElement("tr");
    row.dataset.txId = p.tx_id;
    cell(row, timeOf(p.scored_at)).title = p.scored_at;
    cell(row, p.tx_id, "id");
    cell(row, p.customer_id + " / " + p.terminal_id, "id");
    cell(row, fixed(p.fraud_probability, 3), "num probability");
    const reasons = cell(row, undefined, "reasons");
    for (const name of p.reasons) {
      const span = document.createElement("span");
      span.className = "reason";
      const value = p.features[name];
      span.textContent = typeof value === "number" ? name + " = " + +value.toFixed(3) : name;
      reasons.appendChild(span);
    }
    cell(row, undefined, "feature-list").appendChild(featureList(p));
    body.appendChild(row);
  }
}

const SVG = "http://www.w3.org/2000/svg";

// The score's distribution now against the reference: two bars per bin, heights as shares of the samples.
function renderDrift(d) {
  const chart = byId("drift-chart");
  chart.replaceChildren();
  const body = byId("drift-features");
  body.replaceChildren();
  if (!d) {
    setText("drift-status", "no report yet");
    return emptyRow(body, 2, "-");
  }
  setText("drift-status", d.status);
  setText("drift-summary", d.rows + " samples against " + d.reference_rows + " of the reference; score PSI " +
    fixed(d.score_psi, 3) + ", alert rate " + fixed(d.alert_rate * 100, 2) + " % (reference " +
    fixed(d.reference_alert_rate * 100, 2) + " %)");
  const bins = d.score_bins || { reference: [], current: [] };
  const n = bins.reference.length;
  const top = Math.max(0.01, ...bins.reference, ...bins.current);
  const width = 420, height = 110, slot = n ? width / n : width;
  bins.reference.forEach((share, i) => {
    for (const [k, value, colour] of [[0, share, "#98a2b3"], [1, bins.current[i] || 0, "#b35900"]]) {
      const bar = document.createElementNS(SVG, "rect");
      const h = Math.round((value / top) * height);
      bar.setAttribute("x", String(i * slot + k * (slot / 2 - 1) + 1));
      bar.setAttribute("y", String(height - h));
      bar.setAttribute("width", String(Math.max(1, slot / 2 - 2)));
      bar.setAttribute("height", String(h));
      bar.setAttribute("fill", colour);
      bar.setAttribute("class", k ? "bar current" : "bar reference");
      chart.appendChild(bar);
    }
  });
  for (const w of d.worst) {
    const row = document.createElement("tr");
    row.dataset.feature = w.feature;
    cell(row, w.feature);
    cell(row, fixed(w.psi, 3) + (w.psi >= 0.25 ? " drift" : w.psi >= 0.1 ? " warn" : ""), "num");
    body.appendChild(row);
  }
}

// Champion, challenger and the served probabilities' figures, the last comparison and what made the champion.
function renderModels(m) {
  const body = byId("model-lines");
  body.replaceChildren();
  for (const role of ["champion", "challenger", "served"]) {
    const line = m && m[role];
    if (!line) continue;
    const row = document.createElement("tr");
    row.dataset.role = role;
    cell(row, role);
    cell(row, line.version || (role === "served" ? "as served" : "-"), "id");
    cell(row, String(line.labelled ?? "-"), "num");
    cell(row, String(line.frauds ?? "-"), "num");
    cell(row, fixed(line.ap, 3), "num");
    cell(row, fixed(line.auc, 3), "num");
    body.appendChild(row);
  }
  if (!body.children.length) emptyRow(body, 6, "no version yet");
  const c = m && m.comparison;
  setText("model-comparison", c ? "last comparison over " + c.labelled + " labelled (" + c.frauds + " frauds): " +
    "champion AP " + fixed(c.champion_ap, 3) + ", challenger AP " + fixed(c.challenger_ap, 3) +
    (c.interval ? ", interval of the difference [" + fixed(c.interval[0], 3) + ", " + fixed(c.interval[1], 3) + "]" : "") +
    ": " + c.why : "");
  const last = m && m.last_change;
  setText("model-last-change", last ? last.action + " " + last.version + " by " + last.by + ": " + last.reason : "");
}

function render(s) {
  setText("worker", s.worker);
  const status = byId("status");
  status.textContent = s.status;
  status.className = "badge " + s.status;
  setText("ready", s.ready ? "ready" : "not ready");
  const issues = byId("issues");
  issues.replaceChildren();
  for (const issue of s.issues) {
    const li = document.createElement("li");
    li.textContent = issue;
    issues.appendChild(li);
  }
  setText("window", String(s.window_s));
  setText("throughput", fixed(s.throughput_tps, 1));
  setText("latency-p50", fixed(s.latency_ms.p50, 1));
  setText("latency-p95", fixed(s.latency_ms.p95, 1));
  setText("latency-p99", fixed(s.latency_ms.p99, 1));
  setText("error-rate", fixed(s.error_rate * 100, 2) + " %");
  setText("last-transaction-age", fixed(s.last_transaction_age_s, 0));
  setText("model-version", s.model_version);
  setText("labels-learned", String(s.labels_learned));
  setText("feed-lag", fixed(s.terminal_feed_lag_s, 2));
  setText("total-scored", String(s.totals.scored));
  setText("total-dead", String(s.totals.dead_letter));
  setText("total-flagged", String(s.totals.predicted_fraud));
  setText("threshold", String(s.decision_threshold));
  renderDeadLetters(s.dead_letters_by_code);
  renderRules(s.rules);
  renderHighScores(s.high_scores);
  renderDrift(s.drift);
  renderModels(s.models);
  setText("updated", s.timestamp);
  setText("error", "");
}

async function poll() {
  try {
    const response = await fetch("status.json", { cache: "no-store" });
    if (!response.ok) throw new Error("status.json answered " + response.status);
    render(await response.json());
  } catch (err) {
    setText("error", "worker not answering: " + err.message);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
