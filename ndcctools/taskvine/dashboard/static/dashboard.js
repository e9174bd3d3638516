// The TaskVine dashboard page: polls api/state every second, keeps the series over time in
// this page (the server keeps none) and draws them with uPlot. Everything the run says
// (commands, outputs, host names) goes into the page as text, never as HTML.
"use strict";

(() => {
  const POLL_MS = 1000;
  const KEEP = 3600; // samples kept per series: an hour at one a second
  const RATE_WINDOW = 5; // samples the throughput is averaged over
  const CHART_HEIGHT = 190;

  // time (epoch s), then one array per drawn line; index i of each is sample i
  const samples = { t: [], waiting: [], running: [], results: [], done: [], failed: [],
                    rate: [], failRate: [], cores: [], coresTotal: [] };
  let polls = 0;
  let failuresShown = "";

  // -- formatting
  const count = (n) => (n ?? 0).toLocaleString("en-US");
  const fixed = (x, digits) => (x ?? 0).toFixed(digits);
  function bytes(n) {
    const units = ["B", "kB", "MB", "GB", "TB"];
    let i = 0;
    for (n = n ?? 0; n >= 1000 && i < units.length - 1; i++) n /= 1000;
    return `${i ? n.toFixed(1) : n} ${units[i]}`;
  }
  function duration(s) {
    s = Math.max(0, Math.round(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return h ? `${h}h${String(m).padStart(2, "0")}m` : m ? `${m}m${String(s % 60).padStart(2, "0")}s` : `${s}s`;
  }

  // a task that ran to its end is "success" with its exit code; other results say why not
  const outcome = (t) => (t.result === "success" ? `exit ${t.exit_code}` : t.result);

  // -- DOM
  function el(tag, props, ...children) {
    const e = Object.assign(document.createElement(tag), props);
    for (const c of children) e.append(c instanceof Node ? c : String(c ?? ""));
    return e;
  }
  const setText = (id, value) => { document.getElementById(id).textContent = value; };

  function meter(inuse, total, label) {
    const bar = el("i");
    bar.style.width = `${total ? Math.min(100, (100 * inuse) / total) : 0}%`;
    return el("td", {}, el("span", { className: "meter" }, bar), label ?? `${inuse} / ${total}`);
  }

  function fillTable(id, rows, cells, empty) {
    const body = document.querySelector(`#${id} tbody`);
    const width = document.querySelectorAll(`#${id} thead th`).length;
    const trs = rows.map((row) => el("tr", {}, ...cells(row).map((c) =>
      c instanceof HTMLTableCellElement ? c : el("td", {}, c))));
    if (!trs.length) trs.push(el("tr", {}, el("td", { className: "empty", colSpan: width }, empty)));
    body.replaceChildren(...trs);
  }

  // -- charts
  function chart(id, lines, axes) {
    const box = document.getElementById(id);
    const opts = {
      width: box.clientWidth || 400, height: CHART_HEIGHT,
      series: [{}, ...lines.map(({ key, ...l }) => ({ width: 2, points: { show: false }, ...l }))],
      scales: { x: { time: true } },
      axes: axes ?? [{}, {}],
      legend: { live: false },
    };
    const keys = lines.map((l) => l.key); // which of samples each line draws
    return { box, keys, plot: new uPlot(opts, [[], ...keys.map(() => [])], box) };
  }

  const charts = {
    states: chart("chart-states", [
      { label: "waiting", stroke: "#90a4ae", key: "waiting" },
      { label: "running", stroke: "#1565c0", key: "running" },
      { label: "with results", stroke: "#f9a825", key: "results" },
      { label: "done", stroke: "#2e7d32", key: "done", scale: "done" },
      { label: "failed", stroke: "#c62828", key: "failed", scale: "done" },
    ], [{}, {}, { scale: "done", side: 1, grid: { show: false } }]),
    throughput: chart("chart-throughput", [
      { label: `done/s (${RATE_WINDOW}s)`, stroke: "#2e7d32", key: "rate", fill: "rgba(46,125,50,0.08)" },
      { label: "failed/s", stroke: "#c62828", key: "failRate" },
    ]),
    cores: chart("chart-cores", [
      { label: "in use", stroke: "#1565c0", key: "cores", fill: "rgba(21,101,192,0.08)" },
      { label: "total", stroke: "#90a4ae", key: "coresTotal", dash: [4, 4] },
    ]),
  };

  function redraw() {
    for (const { plot, keys } of Object.values(charts)) {
      plot.setData([samples.t, ...keys.map((k) => samples[k])]);
    }
  }

  function resize() {
    for (const { box, plot } of Object.values(charts)) {
      plot.setSize({ width: box.clientWidth || 400, height: CHART_HEIGHT });
    }
  }

  function rate(key) {
    const n = samples.t.length, k = Math.min(RATE_WINDOW, n - 1);
    if (k < 1) return 0;
    const dt = samples.t[n - 1] - samples.t[n - 1 - k];
    return dt > 0 ? Math.max(0, (samples[key][n - 1] - samples[key][n - 1 - k]) / dt) : 0;
  }

  function record(o) {
    const s = samples;
    if (s.t.length && o.now <= s.t[s.t.length - 1]) return;
    s.t.push(o.now);
    s.waiting.push(o.tasks_by_state.waiting);
    s.running.push(o.tasks_by_state.running);
    s.results.push(o.tasks_with_results);
    s.done.push(o.tasks_done);
    s.failed.push(o.tasks_failed);
    s.cores.push(o.committed_cores);
    s.coresTotal.push(o.total_cores);
    s.rate.push(rate("done"));
    s.failRate.push(rate("failed"));
    if (s.t.length > KEEP) for (const a of Object.values(s)) a.shift();
  }

  // -- the parts of the page
  function showOverview(o) {
    for (const node of document.querySelectorAll("[id^='stat-']")) {
      const name = node.id.slice(5);
      if (name in o) node.textContent = count(o[name]);
    }
    setText("stat-cores", `${fixed(o.committed_cores, 0)} / ${fixed(o.total_cores, 0)}`);
    setText("stat-bytes", `${bytes(o.bytes_sent)} / ${bytes(o.bytes_received)}`);
    setText("manager-name", o.name);
    setText("manager-port", `port ${o.port}`);
    setText("uptime", `up ${duration(o.now - o.time_when_started / 1e6)}`);
  }

  function showWorkers(workers, now) {
    fillTable("workers", workers, (w) => [
      w.hostname, w.addrport,
      meter(w.cores_inuse, w.cores_total),
      meter(w.memory_inuse, w.memory_total),
      meter(w.disk_inuse, w.disk_total),
      `${w.gpus_inuse} / ${w.gpus_total}`,
      w.tasks_running, count(w.tasks_done),
      `${bytes(w.cache_bytes)} (${w.cache_objects})`,
      duration(now - w.connected_at), // both epoch seconds
    ], "no worker connected");
  }

  function showLibraries(libraries, names) {
    const rows = libraries.length ? libraries : names.map((name) => ({ name }));
    fillTable("libraries", rows, (l) => [
      l.name, l.instances ?? "", l.slots ?? "", l.calls_in_flight ?? "", l.failures ?? "",
      l.dropped ? "dropped" : l.pending ? "starting" : "ready",
    ], "no library installed");
  }

  function showFinished(f) {
    fillTable("slowest", f.slowest, (t) => [
      t.task_id, fixed(t.seconds, 3), outcome(t),
      t.worker, el("td", { className: "command", title: t.command }, t.command),
    ], "no task finished yet");
    const total = f.buckets.reduce((a, [, n]) => a + n, 0);
    fillTable("durations", f.buckets.filter(([, n]) => n), ([bound, n]) => [
      bound === null ? "longer" : `${bound} s`, count(n), meter(n, total, ""),
    ], "no task finished yet");
    showFailures(f.failures);
  }

  function showFailures(failures) {
    const key = JSON.stringify(failures.map((t) => [t.task_id, t.when]));
    if (key === failuresShown) return; // keep the reader's scroll position in the outputs
    failuresShown = key;
    const box = document.getElementById("failures");
    if (!failures.length) {
      box.replaceChildren(el("p", { className: "muted" }, "no task failed"));
      return;
    }
    box.replaceChildren(...failures.map((t) => el("div", { className: "failure" },
      el("b", {}, `task ${t.task_id}`), ` ${outcome(t)}, `,
      el("span", { className: "muted" }, `on ${t.worker || "?"}, ${fixed(t.seconds, 3)} s: `),
      el("code", {}, t.command),
      t.output ? el("pre", {}, t.output) : el("p", { className: "muted" }, "(no output)"))));
  }

  function render(state) {
    const o = state.overview;
    showOverview(o);
    record(o);
    redraw();
    showWorkers(state.workers, o.now);
    fillTable("transfers", state.transfers, (t) => [
      t.cachename, bytes(t.size), t.source, t.dest, `${fixed(t.seconds, 1)} s`,
    ], "none");
    showLibraries(state.libraries, o.libraries);
    showFinished(state.finished);
  }

  function setStatus(kind, message) {
    const node = document.getElementById("status");
    node.className = `status ${kind}`;
    node.textContent = message;
  }

  async function poll() {
    try {
      const reply = await fetch("api/state", { cache: "no-store" });
      if (!reply.ok) throw new Error(`${reply.status}: ${(await reply.text()).trim()}`);
      render(await reply.json());
      polls += 1;
      document.body.dataset.polls = polls;
      setStatus("live", `live · ${new Date().toLocaleTimeString()}`);
    } catch (e) {
      setStatus("down", `no answer from the manager (${e.message})`);
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  window.addEventListener("resize", resize);
  window.taskvineDashboard = { samples };
  poll();
})();
