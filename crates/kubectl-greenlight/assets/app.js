// Greenlight's dashboard. Every text from the cluster goes into the page as text
// (textContent, never HTML): a release's version or a gate's message may hold anything.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const main = document.getElementById("main");
let session = { namespace: "", user: null };
let charts = [];

// el("div", {class: "x", onclick: f}, child, "text", ...): an element; strings become text.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function link(text, hash) { return el("a", { href: "#" + hash }, text); }
function badge(text) { return el("span", { class: "badge " + String(text) }, text); }
function when(seconds) { return new Date(seconds * 1000).toLocaleString(); }
function enc(name) { return encodeURIComponent(name); }

async function getJson(path) {
  const response = await fetch(path, { headers: { accept: "application/json" } });
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

async function postJson(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json", "x-greenlight-csrf": CSRF },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({ error: response.statusText }));
  return { ok: response.ok, status: response.status, body: answer };
}

// The current view, drawn again from fresh data at each change the server reports.
let current = { render: null, key: "" };

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const [view, name] = parts;
  if (view === "pipeline" && name) return { key: "p:" + name, render: () => pipelineView(name) };
  if (view === "release" && name) return { key: "r:" + name, render: () => releaseView(name) };
  if (view === "analysis" && name) return { key: "a:" + name, render: () => analysisView(name) };
  if (view === "insight") return { key: "i", render: insightView };
  return { key: "home", render: homeView };
}

async function draw() {
  const target = route();
  const fresh = target.key !== current.key;
  current = target;
  try {
    const content = await target.render();
    if (current !== target) return;
    charts.forEach((c) => c.destroy());
    charts = [];
    main.replaceChildren(...content.nodes.flat(Infinity).filter((n) => n !== null && n !== undefined && n !== false));
    content.after && content.after();
    if (fresh) window.scrollTo(0, 0);
  } catch (e) {
    main.replaceChildren(el("p", { class: "result bad" }, String(e.message || e)));
  }
}

async function homeView() {
  const pipelines = await getJson("/api/pipelines");
  if (pipelines.length === 1 && !sessionStorage.getItem("listed")) {
    sessionStorage.setItem("listed", "1");
    location.hash = "#/pipeline/" + enc(pipelines[0].name);
    return { nodes: [] };
  }
  const rows = pipelines.map((p) =>
    el("tr", {}, el("td", {}, link(p.name, "/pipeline/" + enc(p.name))), el("td", {}, p.stages),
      el("td", {}, Object.entries(p.phases).map(([phase, n]) => [badge(phase), " " + n + " "]))));
  return { nodes: [
    el("h1", {}, "Pipelines in ", session.namespace),
    pipelines.length ? el("table", { id: "pipelines" },
      el("tr", {}, el("th", {}, "Pipeline"), el("th", {}, "Stages"), el("th", {}, "Phases")), rows)
      : el("p", { class: "muted" }, "No stages in this namespace."),
  ] };
}

async function pipelineView(name) {
  const page = await getJson("/api/pipelines/" + enc(name));
  current.retry = page.retry;
  const columns = [];
  for (const stage of page.stages) {
    const depth = page.depth[stage.name] || 0;
    (columns[depth] = columns[depth] || []).push(stage);
  }
  const graph = el("div", { class: "graph", id: "graph" },
    columns.map((stages) => el("div", { class: "column" }, stages.map(stageCard))));
  return {
    nodes: [el("h1", {}, "Pipeline ", name, " ", el("span", { class: "muted" }, "in " + page.namespace)), graph],
    after: () => drawEdges(graph, page.stages),
  };
}

function stageCard(stage) {
  const facts = el("dl", { class: "kv" },
    el("dt", {}, "strategy"), el("dd", {}, stage.strategy),
    el("dt", {}, "running"), el("dd", { class: "current" }, stage.current || "nothing yet"),
    stage.candidate && [el("dt", {}, "candidate"), el("dd", { class: "candidate" }, releaseLink(stage.candidate))]);
  const canary = stage.canary && [
    el("div", { class: "canary" }, "canary step ", stage.canary.step, " of ", stage.canary.steps, ", ",
      stage.canary.weight, "% (", stage.canary.phase, ")"),
    el("div", { class: "bar" }, el("span", { style: null, "data-weight": stage.canary.weight })),
  ];
  const gates = stage.gates.length ? el("ul", { class: "gates" }, stage.gates.map((g) =>
    el("li", { class: "gate", "data-gate": g.name }, badge(g.verdict), " ", el("strong", {}, g.name),
      g.value ? " = " + g.value : "", ": ", g.message))) : null;
  return el("section", { class: "stage " + stage.phase, id: "stage-" + stage.name, "data-stage": stage.name },
    el("h3", {}, stage.name, badge(stage.phase)),
    stage.emergency && el("div", { class: "emergency" }, stage.emergency),
    facts, canary,
    stage.why && el("div", { class: "why" }, stage.why),
    gates,
    stage.targetChange && el("div", { class: "why" }, "target edited: ", stage.targetChange),
    (stage.openReviews || []).map(([release, due]) =>
      el("div", { class: "emergency" }, "review open for ", release, due ? ", due " + new Date(due).toLocaleString() : "")),
    el("div", { class: "actions" }, stageActions(stage)),
    el("div", { class: "result", hidden: true }));
}

// `version (release)` to a link to the release's page.
function releaseLink(label) {
  const m = /\(([^()]*)\)$/.exec(label);
  return m ? link(label, "/release/" + enc(m[1])) : label;
}

function releaseOf(label) {
  const m = /\(([^()]*)\)$/.exec(label || "");
  return m ? m[1] : null;
}

function stageActions(stage) {
  const buttons = [];
  const candidate = releaseOf(stage.candidate);
  // A decision is asked for while the candidate waits; not over a rollout under way.
  if (candidate && (stage.phase === "Waiting" || stage.phase === "Blocked")) {
    buttons.push(el("button", { class: "primary", "data-action": "approve",
      onclick: () => decide(stage, candidate, "approve") }, "Approve"));
    buttons.push(el("button", { "data-action": "reject",
      onclick: () => decide(stage, candidate, "reject") }, "Reject"));
  }
  if (stage.canary) {
    buttons.push(el("button", { "data-action": "promote", onclick: () => steer(stage, "promote", candidate) }, "Promote"));
  }
  if (stage.phase === "Progressing" || stage.phase === "Verifying" || stage.canary) {
    buttons.push(el("button", { class: "danger", "data-action": "abort", onclick: () => steer(stage, "abort") }, "Abort"));
  }
  const failed = current.retry && current.retry[stage.name];
  if (stage.phase === "Failed" && failed) {
    buttons.push(el("button", { "data-action": "retry", onclick: () => steer(stage, "retry", failed) }, "Retry " + failed));
  }
  buttons.push(link("analysis", "/analysis/" + enc(stage.name)));
  return buttons;
}

// Asks before acting; resolves to the comment, or null when cancelled.
function confirmAction(title, text, withComment) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-comment-label").hidden = !withComment;
  document.getElementById("confirm-comment").value = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok" ? document.getElementById("confirm-comment").value : null);
    }, { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

// What the last action at a stage came to, shown on its card; kept, so the card keeps it
// when a change draws the view again (the card may be redrawn while an action waits).
function showResult(stage, ok, text) {
  pinned.set(stage, { ok, text });
  pinResults();
}

function pinResults() {
  for (const [name, result] of pinned) {
    const box = main.querySelector('[data-stage="' + CSS.escape(name) + '"] .result');
    if (!box) continue;
    box.hidden = false;
    box.className = "result " + (result.ok === null ? "pending" : result.ok ? "ok" : "bad");
    box.textContent = result.text;
  }
}

// Results stay on their card when the view is drawn again.
const pinned = new Map();

async function decide(stage, release, decision) {
  const verb = decision === "approve" ? "Approve" : "Reject";
  const who = session.user || "you (your kubeconfig's user)";
  const comment = await confirmAction(verb + " " + release + " at " + stage.name + "?",
    "This creates an Approval by " + who + " in namespace " + session.namespace +
    (decision === "approve" ? ". It counts only if a gate of the stage lists you as an approver."
      : ". A rejection stops the release at this stage."), true);
  if (comment === null) return;
  showResult(stage.name, null, "Sent; waiting for the controller…");
  const answer = await postJson("/api/approvals", { release, stage: stage.name, decision, comment });
  if (!answer.ok) return showResult(stage.name, false, answer.body.error);
  const b = answer.body;
  showResult(stage.name, b.counts, "approval " + b.name + ": " + b.message);
}

const STEER_TEXT = {
  promote: (r) => "skips the rest of the current canary step or analysis wait of " + r + ". It is refused if the dashboard already sees the stage rolling out another release.",
  abort: () => "takes traffic off the canary and rolls back to the release the stage ran before, whatever it rolls out by then.",
  retry: (r) => "rolls out " + r + " again.",
};

async function steer(stage, action, release) {
  const ok = await confirmAction(action[0].toUpperCase() + action.slice(1) + " at " + stage.name + "?",
    "This creates a StageCommand as you: the stage " + STEER_TEXT[action](release), false);
  if (ok === null) return;
  showResult(stage.name, null, "Sent; waiting for the stage to take it…");
  const answer = await postJson("/api/commands", { stage: stage.name, action, release });
  if (!answer.ok) return showResult(stage.name, false, answer.body.error);
  const b = answer.body;
  showResult(stage.name, b.phase === "Applied", action + " " + b.stage + ": " + b.phase + (b.message ? ": " + b.message : ""));
}

// Lines from each stage to the stages that require it, drawn once the cards are laid out.
function drawEdges(graph, stages) {
  pinResults();
  graph.querySelectorAll(".bar > span").forEach((s) => { s.style.width = Number(s.dataset.weight) + "%"; });
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "edges");
  svg.setAttribute("width", graph.scrollWidth);
  svg.setAttribute("height", graph.scrollHeight);
  const origin = graph.getBoundingClientRect();
  const box = (name) => graph.querySelector('[data-stage="' + CSS.escape(name) + '"]');
  for (const stage of stages) {
    for (const required of stage.requires) {
      const from = box(required), to = box(stage.name);
      if (!from || !to) continue;
      const a = from.getBoundingClientRect(), b = to.getBoundingClientRect();
      const x1 = a.right - origin.left, y1 = a.top + a.height / 2 - origin.top;
      const x2 = b.left - origin.left, y2 = b.top + b.height / 2 - origin.top;
      const path = document.createElementNS(ns, "path");
      const mid = (x1 + x2) / 2;
      path.setAttribute("d", `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`);
      path.setAttribute("fill", "none");
      path.setAttribute("stroke", "#98a2b3");
      path.setAttribute("stroke-width", "2");
      path.setAttribute("class", "edge");
      path.dataset.from = required;
      path.dataset.to = stage.name;
      svg.append(path);
    }
  }
  graph.prepend(svg);
}

async function releaseView(name) {
  const r = await getJson("/api/releases/" + enc(name));
  const stages = Object.entries(r.stages).map(([stage, s]) => {
    const verdicts = [...(s.gates || []), ...(s.checks || [])];
    return [
    el("h2", {}, "At ", stage, " ", badge(s.phase)),
    s.message && el("p", { class: "why" }, s.message),
    s.policy && el("p", { class: "muted" }, s.policy),
    verdicts.length ? el("table", { class: "verdicts", "data-stage": stage },
      el("tr", {}, el("th", {}, "Gate"), el("th", {}, "Verdict"), el("th", {}, "Value"), el("th", {}, "Message"), el("th", {}, "Since")),
      verdicts.map((g) => el("tr", {},
        el("td", {}, g.list ? g.list + " " + g.name : g.name), el("td", {}, badge(g.result)),
        el("td", {}, g.value || ""), el("td", {}, g.message), el("td", {}, new Date(g.since).toLocaleString())))) : null,
  ]; });
  const trail = el("ol", { class: "timeline", id: "timeline" }, r.audit.map((a) =>
    el("li", { class: a.action },
      el("div", {}, el("strong", {}, a.action), " at ", a.stage, " by ", el("span", { class: "actor" }, a.actor)),
      el("div", { class: "when" }, new Date(a.time).toLocaleString()),
      a.message && el("div", {}, a.message),
      a.changeTicket && el("div", { class: "muted" }, "change ", a.changeTicket))));
  const notices = r.notices.length ? el("table", { id: "notices" },
    el("tr", {}, el("th", {}, "Notice"), el("th", {}, "Sent to"), el("th", {}, "When"), el("th", {}, "Message")),
    r.notices.map((n) => el("tr", {}, el("td", {}, n.reason), el("td", {}, n.deliveredTo),
      el("td", {}, n.time ? new Date(n.time).toLocaleString() : ""), el("td", {}, n.message))))
    : el("p", { class: "muted" }, r.noticesError ? "Notices cannot be read: " + r.noticesError : "No notices sent.");
  return { nodes: [
    el("h1", {}, "Release ", el("span", { id: "release-version" }, r.version), " ",
      el("span", { class: "muted" }, "(" + r.name + ", " + r.releaseType + ", pipeline "), link(r.pipeline, "/pipeline/" + enc(r.pipeline)),
      el("span", { class: "muted" }, ")"), " ", r.phase ? badge(r.phase) : null),
    el("dl", { class: "kv", id: "release-images" }, Object.entries(r.images).map(([n, i]) => [el("dt", {}, n), el("dd", {}, i)]),
      r.author && [el("dt", {}, "author"), el("dd", { id: "release-author" }, r.author)],
      r.commit && [el("dt", {}, "commit"), el("dd", {}, r.commit)]),
    r.notes && el("p", { id: "release-notes", class: "notes" }, r.notes),
    stages,
    el("h2", {}, "Audit trail"), r.audit.length ? trail : el("p", { class: "muted" }, "Nothing recorded yet."),
    el("h2", {}, "Notices"), notices,
  ] };
}

async function analysisView(name) {
  const a = await getJson("/api/stages/" + enc(name) + "/analysis");
  const title = el("h1", {}, "Analysis at ", name, " ",
    a.release ? el("span", { class: "muted" }, "of ", a.version || "", " (", link(a.release, "/release/" + enc(a.release)), ")") : "");
  const sections = a.series.map((s, i) => el("section", { class: "chart", "data-gate": s.gate, "data-scope": s.scope, "data-points": s.points.length },
    el("h2", {}, s.gate, " ", el("span", { class: "muted" }, s.scope, s.condition ? ", passes when value " + s.condition.op + " " + s.condition.threshold : "")),
    el("div", { class: "plot", id: "plot-" + i }),
    el("p", { class: "muted" }, s.successes, " passed, ", s.failures, " failed, ", s.inconclusive, " inconclusive"),
    el("table", { class: "measurements" }, el("tr", {}, el("th", {}, "When"), el("th", {}, "Value"), el("th", {}, "Verdict")),
      s.points.map((p) => el("tr", { class: "measurement" }, el("td", {}, when(p.at)), el("td", {}, p.value === null ? "no number" : p.value), el("td", {}, badge(p.verdict)))))));
  const comparisons = a.comparisons.length ? [el("h2", {}, "Comparison with the primary"),
    el("pre", { id: "comparisons" }, JSON.stringify(a.comparisons, null, 2))] : [];
  const checks = a.checks.length ? [el("h2", {}, "Checks"), el("table", { id: "checks" }, a.checks.map((c) =>
    el("tr", {}, el("td", {}, c.name), el("td", {}, badge(c.verdict)), el("td", {}, c.value || ""), el("td", {}, c.message))))] : [];
  return {
    nodes: [title, a.series.length ? sections : el("p", { class: "muted" }, "No analysis is measuring at this stage now."), comparisons, checks],
    after: () => a.series.forEach((s, i) => chart(document.getElementById("plot-" + i), s)),
  };
}

// One gate's measurements against its threshold.
function chart(into, s) {
  if (!window.uPlot || !into) return;
  const xs = s.points.map((p) => p.at);
  const values = s.points.map((p) => p.value);
  const series = [{}, { label: s.gate, stroke: "#175cd3", width: 2, points: { show: true, size: 7 } }];
  const data = [xs, values];
  if (s.condition) {
    series.push({ label: "threshold " + s.condition.op + " " + s.condition.threshold, stroke: "#c4320a", dash: [6, 4], width: 1.5, points: { show: false } });
    data.push(xs.map(() => s.condition.threshold));
  }
  const width = Math.max(320, Math.min(into.parentElement.clientWidth - 20, 1000));
  charts.push(new uPlot({ width, height: 220, series, axes: [{}, {}], scales: { x: { time: true } } }, data, into));
}

async function insightView() {
  const page = await getJson("/api/insight?weeks=8");
  const sections = page.reports.map((r) => {
    const f = r.figures;
    const lead = f.leadTimeSeconds ? Math.round(f.leadTimeSeconds.p50 / 60) + " min" : "—";
    const restore = f.timeToRestoreSeconds ? Math.round(f.timeToRestoreSeconds.p50 / 60) + " min" : "—";
    const rate = f.changeFailureRate === null || f.changeFailureRate === undefined ? "—" : Math.round(f.changeFailureRate * 100) + "%";
    const card = (label, n, band) => el("div", { class: "figure" }, el("div", { class: "muted" }, label), el("div", { class: "n" }, n), band ? badge(band) : null);
    return el("section", { class: "pipeline-insight", "data-pipeline": r.pipeline },
      el("h2", {}, r.pipeline, " ", el("span", { class: "muted" }, "production: " + r.production.join(", "))),
      el("div", { class: "cards" },
        card("Deployments", f.deployments + " (" + f.deploymentsPerWeek.toFixed(1) + "/week)", f.bands.deploymentFrequency),
        card("Lead time (median)", lead, f.bands.leadTime),
        card("Change failure rate", rate, f.bands.changeFailureRate),
        card("Time to restore (median)", restore, f.bands.timeToRestore),
        card("Reviews open", r.reviewsOpen + (r.reviewsOverdue ? " (" + r.reviewsOverdue + " overdue)" : ""))),
      el("div", { class: "chart plot", id: "trend-" + r.pipeline }),
      el("table", { class: "stages" }, el("tr", {}, el("th", {}, "Stage"), el("th", {}, "Deployments"), el("th", {}, "Failures"), el("th", {}, "Restores")),
        r.stages.map((s) => el("tr", {}, el("td", {}, s.stage), el("td", {}, s.figures.deployments), el("td", {}, s.figures.failures), el("td", {}, s.figures.restores)))));
  });
  return {
    nodes: [el("h1", {}, "Delivery over the last ", page.periodDays, " days"), page.reports.length ? sections : el("p", { class: "muted" }, "No pipelines.")],
    after: () => page.reports.forEach((r) => trend(document.getElementById("trend-" + r.pipeline), r.pipeline, page.weeks)),
  };
}

// Deployments and failures per week for one pipeline.
function trend(into, pipeline, weeks) {
  if (!window.uPlot || !into) return;
  const of = (w) => w.pipelines.find((p) => p.pipeline === pipeline);
  const xs = weeks.map((w) => w.since);
  const deployments = weeks.map((w) => (of(w) ? of(w).figures.deployments : 0));
  const failures = weeks.map((w) => (of(w) ? of(w).figures.failures : 0));
  const series = [{}, { label: "deployments per week", stroke: "#12805c", width: 2 }, { label: "failures per week", stroke: "#c4320a", width: 2 }];
  const width = Math.max(320, Math.min(into.clientWidth - 20, 1000));
  charts.push(new uPlot({ width, height: 200, series, scales: { x: { time: true } } }, [xs, deployments, failures], into));
}

// Live: the server says when a watch saw a change; the view is read again then.
// The first event says where the store is; a view read at an older revision is read again.
// While a confirmation is open the view stays as the person saw it, and is read again once
// the confirmation closes.
let seen = -1;
let missed = false;

function listen() {
  const live = document.getElementById("live");
  const source = new EventSource("/api/changes");
  source.onopen = () => { live.textContent = "live"; live.classList.remove("off"); };
  source.onerror = () => {
    live.classList.add("off");
    // Closed for good: the session ended (signed out, expired) or the dashboard restarted.
    live.textContent = source.readyState === EventSource.CLOSED ? "stopped: reload, or sign in again" : "reconnecting";
  };
  source.addEventListener("change", (event) => {
    const revision = Number(event.data);
    if (revision === seen) return;
    seen = revision;
    if (document.getElementById("confirm").open) { missed = true; return; }
    draw();
    problems();
  });
  document.getElementById("confirm").addEventListener("close", () => {
    if (missed) { missed = false; draw(); problems(); }
  });
}

// Kinds the person cannot watch, as the dashboard says now.
async function problems() {
  const now = await getJson("/api/session").catch(() => null);
  if (!now) return;
  const box = document.getElementById("problems");
  box.hidden = now.errors.length === 0;
  box.textContent = now.errors.length ? "Cannot watch " + now.errors.join("; ") : "";
}

async function start() {
  try {
    session = await getJson("/api/session");
  } catch (e) {
    main.replaceChildren(el("p", { class: "result bad" }, String(e.message || e)));
    return;
  }
  document.getElementById("who").textContent = (session.user || "your kubeconfig") + " · " + session.namespace;
  if (session.user) {
    document.getElementById("who").after(el("button", { id: "sign-out", onclick: async () => {
      await postJson("/auth/logout", {});
      location.assign("/");
    } }, "Sign out"));
  }
  seen = session.revision;
  if (session.errors.length) {
    const box = document.getElementById("problems");
    box.hidden = false;
    box.textContent = "Cannot watch " + session.errors.join("; ");
  }
  window.addEventListener("hashchange", draw);
  listen();
  draw();
}

start();
