// The inferstream dashboard: polls /ui/api/state about once a second and draws it.
// Text from the platform (model names, dead-letter reasons, outputs) only ever goes
// into textContent, never into HTML. Charts are uPlot's (vendored, MIT).
"use strict";

(function () {
  const POLL_MS = 1000;
  const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f"];
  // What the tests (and a curious reader, in the console) can look at.
  const board = (window.inferstream = { charts: {}, state: null, polls: 0 });

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function fill(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  function num(value, digits) {
    return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
  }

  function clock(seconds) {
    return seconds ? new Date(seconds * 1000).toLocaleTimeString() : "–";
  }

  function iso(text) {
    return text ? new Date(text).toLocaleTimeString() : "–";
  }

  function width(node) {
    return Math.max(280, Math.floor(node.getBoundingClientRect().width) - 8);
  }

  // -- charts ------------------------------------------------------------------------

  function chart(key, holder, title, series, data) {
    let plot = board.charts[key];
    if (!plot) {
      const options = {
        title: title,
        width: width(holder),
        height: 170,
        scales: { x: { time: true } },
        series: [{}].concat(series),
        legend: { live: false },
      };
      plot = new uPlot(options, data, holder);
      board.charts[key] = plot;
    } else {
      plot.setData(data);
    }
    // For tests and scripts: how many non-zero values the chart holds now.
    let points = 0;
    for (let i = 1; i < data.length; i++) for (const v of data[i]) if (v) points++;
    holder.setAttribute("data-points", String(points));
    return plot;
  }

  function line(label, color, extra) {
    return Object.assign({ label: label, stroke: color, width: 1.5, spanGaps: true, points: { show: false } }, extra || {});
  }

  // -- sections ----------------------------------------------------------------------

  function drawModels(models) {
    const tbody = document.querySelector("#models tbody");
    fill(
      tbody,
      models.map((m) =>
        el(
          "tr",
          { "data-model": m.model + ":" + m.version },
          el("td", { class: "name", text: m.model + ":" + m.version }),
          el("td", { text: m.workers === undefined ? "–" : String(m.workers) }),
          el("td", { text: num(m.consumed_per_s, 1) }),
          el("td", { text: num(m.rate_per_s, 1) }),
          el("td", { text: num(m.p50_ms, 1) }),
          el("td", { text: num(m.p99_ms, 1) }),
          el("td", { text: String(m.total) }),
          el("td", { text: m.lag === undefined ? "–" : String(m.lag) })
        )
      )
    );
    const cards = document.getElementById("model-charts");
    for (const m of models) {
      const consumed = m.consumed && m.consumed.t.length > 1 ? m.consumed : null;
      if (!m.series && !consumed) continue;
      const key = m.model + ":" + m.version;
      let card = cards.querySelector('[data-model="' + CSS.escape(key) + '"]');
      if (!card) {
        card = el("div", { class: "card", "data-model": key }, el("h3", { text: key }));
        cards.append(card);
      }
      const part = (name) => card.querySelector(".chart." + name) || card.appendChild(el("div", { class: "chart " + name }));
      if (m.series) {
        const s = m.series;
        chart("throughput " + key, part("throughput"), "predictions / s", [line("predictions", PALETTE[0], { fill: "rgba(37,99,235,0.12)" })], [s.t, s.count]);
        chart("latency " + key, part("latency"), "latency ms", [line("p50", PALETTE[2]), line("p99", PALETTE[1])], [s.t, s.p50, s.p99]);
      } else {
        // Outputs that are not predictions (an embedder's): its workers' pace, from their committed offsets.
        chart("consumed " + key, part("consumed"), "requests consumed / s", [line("requests", PALETTE[3], { fill: "rgba(147,51,234,0.12)" })], [consumed.t, consumed.rate]);
      }
    }
  }

  function drawMonitors(monitors) {
    const holder = document.getElementById("monitors");
    if (!monitors.length) return;
    holder.querySelector("p.muted")?.remove();
    for (const m of monitors) {
      let card = holder.querySelector('[data-monitor="' + CSS.escape(m.monitor) + '"]');
      if (!card) {
        card = el(
          "div",
          { class: "card monitor", "data-monitor": m.monitor },
          el("h3", {}, el("span", { class: "name", text: m.monitor }), " ", el("span", { class: "muted of" }), " ", el("span", { class: "badge" })),
          el("div", { class: "chart drift" }),
          el("table", { class: "alerts" }, el("thead", {}, el("tr", {}, ...["raised", "status", "severity", "window", "rows", "drifted columns", "report"].map((h) => el("th", { text: h })))), el("tbody"))
        );
        holder.append(card);
      }
      card.querySelector(".of").textContent = m.model + ":" + m.version;
      const badge = card.querySelector(".badge");
      badge.textContent = m.alert_active ? "drift alert" : "no alert";
      badge.className = "badge " + (m.alert_active ? "bad" : "good");
      card.setAttribute("data-alert-active", String(m.alert_active));
      card.setAttribute("data-alerts", String(m.alerts.filter((a) => a.status === "drift").length));

      // The timeline: a score line per column, its threshold dashed, and a marker on windows that alerted.
      const t = m.windows.map((w) => w.t);
      const series = [];
      const data = [t];
      m.columns.forEach((column, i) => {
        const color = PALETTE[i % PALETTE.length];
        series.push(line(column, color, { points: { show: true, size: 4 } }));
        data.push(m.windows.map((w) => (w.columns[column] ? w.columns[column].score : null)));
        series.push(line(column + " threshold", color, { dash: [4, 4], width: 1 }));
        data.push(m.windows.map((w) => (w.columns[column] ? w.columns[column].threshold : null)));
      });
      series.push({ label: "alert", stroke: "#dc2626", paths: () => null, points: { show: true, size: 11, width: 2, stroke: "#dc2626", fill: "#dc2626" } });
      data.push(
        m.windows.map((w) => {
          if (!w.alert) return null;
          const scores = Object.values(w.columns).map((c) => c.score || 0);
          return scores.length ? Math.max(...scores) : 0;
        })
      );
      const key = "drift " + m.monitor;
      const plot = board.charts[key];
      if (plot && plot.series.length !== series.length + 1) {
        plot.destroy(); // the columns changed: draw afresh
        delete board.charts[key];
        card.querySelector(".chart.drift").replaceChildren();
      }
      chart(key, card.querySelector(".chart.drift"), "drift score per column (dashed: threshold; red: alert)", series, data);

      fill(
        card.querySelector(".alerts tbody"),
        m.alerts.map((a) => {
          const link = a.report && a.report.startsWith("/ui/reports/") ? el("a", { href: a.report, target: "_blank", rel: "noopener", text: "report" }) : "–";
          return el(
            "tr",
            { class: "alert-row " + a.status, "data-status": a.status },
            el("td", { text: iso(a.window_end) }),
            el("td", { text: a.status }),
            el("td", { text: a.severity }),
            el("td", { text: iso(a.window_start) + " – " + iso(a.window_end) }),
            el("td", { text: String(a.window_count) }),
            el("td", { text: a.drifted.join(", ") || "none" }),
            el("td", {}, link)
          );
        })
      );
    }
  }

  function drawTail(tail) {
    fill(
      document.querySelector("#tail tbody"),
      tail.map((p) =>
        el(
          "tr",
          {},
          el("td", { text: clock(p.predicted_at) }),
          el("td", { text: p.model + ":" + p.version }),
          el("td", { class: "mono", text: p.request_id }),
          el("td", { text: num(p.total_ms, 1) }),
          el("td", { class: "mono", text: p.outputs })
        )
      )
    );
  }

  function drawRoutes(routes) {
    fill(
      document.querySelector("#routes tbody"),
      routes.map((r) =>
        el(
          "tr",
          {},
          el("td", { class: "name", text: r.model }),
          el("td", { text: r.versions.map((v) => v.version + " (" + v.weight + ", " + Math.round(v.share * 100) + "%)").join("  ") }),
          el("td", { text: r.shadow.join(", ") || "–" }),
          el("td", { text: iso(r.since) })
        )
      )
    );
  }

  function drawLag(groups) {
    fill(
      document.querySelector("#lag tbody"),
      groups.map((g) =>
        el(
          "tr",
          {},
          el("td", { class: "mono", text: g.group }),
          el("td", { text: g.state }),
          el("td", { text: String(g.members) }),
          el("td", { text: String(g.lag) }),
          el("td", { class: "mono small", text: g.partitions.map((p) => p.topic + "[" + p.partition + "]: " + (p.lag === null ? "?" : p.lag)).join("  ") })
        )
      )
    );
  }

  function drawDeadLetters(letters) {
    if (!letters) return;
    document.getElementById("dlq-total").textContent = "(" + letters.total + " on the topic)";
    fill(
      document.querySelector("#dead-letters tbody"),
      letters.latest.map((d) =>
        el(
          "tr",
          {},
          el("td", { text: iso(d.time) }),
          el("td", { text: d.stage }),
          el("td", { class: "mono", text: d.source_topic }),
          el("td", { text: d.error_class }),
          el("td", { class: "reason", text: d.message })
        )
      )
    );
  }

  function drawProblems(problems) {
    fill(
      document.getElementById("problems"),
      Object.entries(problems).map(([section, text]) => el("li", { text: section + ": " + text }))
    );
  }

  function draw(state) {
    board.state = state;
    drawModels(state.models);
    drawMonitors(state.monitors);
    drawTail(state.tail);
    drawRoutes(state.routes);
    drawLag(state.lag);
    drawDeadLetters(state.dead_letters);
    drawProblems(state.problems);
    const loading = Object.entries(state.loaded).filter(([, done]) => !done).map(([name]) => name);
    document.getElementById("status").textContent =
      "updated " + clock(state.now) + (loading.length ? " · reading history: " + loading.join(", ") : "");
  }

  async function poll() {
    try {
      const response = await fetch("/ui/api/state", { credentials: "same-origin", cache: "no-store" });
      if (response.status === 401 || response.status === 403) {
        document.getElementById("status").textContent = "not logged in: open /ui?token=<token>";
        return; // no retry: the page needs the link
      }
      if (response.ok) {
        draw(await response.json());
        board.polls++;
      } else {
        document.getElementById("status").textContent = "the gateway answered " + response.status;
      }
    } catch (error) {
      document.getElementById("status").textContent = "the gateway cannot be reached; retrying";
    }
    setTimeout(poll, POLL_MS);
  }

  async function search(event) {
    event.preventDefault();
    const query = document.getElementById("search-query").value.trim();
    const results = document.getElementById("search-results");
    if (!query) return;
    results.replaceChildren(el("li", { class: "muted", text: "searching…" }));
    try {
      const response = await fetch("/ui/api/search", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ query: query, k: 5 }),
      });
      const body = await response.json();
      if (!response.ok) {
        results.replaceChildren(el("li", { class: "bad", text: (body.detail && (body.detail.message || body.detail)) || response.statusText }));
        return;
      }
      results.setAttribute("data-query", query);
      results.replaceChildren(
        ...body.hits.map((hit) =>
          el("li", { class: "hit", "data-id": hit.id }, el("span", { class: "mono", text: hit.id }), " ", el("span", { class: "muted", text: hit.score.toFixed(3) }), el("div", { class: "passage", text: hit.text || "" }))
        )
      );
      if (!body.hits.length) results.replaceChildren(el("li", { class: "muted", text: "no match" }));
    } catch (error) {
      results.replaceChildren(el("li", { class: "bad", text: "the gateway cannot be reached" }));
    }
  }

  window.addEventListener("resize", () => {
    for (const plot of Object.values(board.charts)) plot.setSize({ width: width(plot.root.parentNode), height: 170 });
  });
  document.getElementById("search-form").addEventListener("submit", search);
  poll();
})();
