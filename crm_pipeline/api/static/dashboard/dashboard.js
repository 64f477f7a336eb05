// The analyst dashboard (crm_pipeline/api/dashboard.py): asks once for an analytics:read API
// key, reads the KPI summary and the ad insights with it, and draws tiles and charts.
//
// The key lives in this tab's sessionStorage only (gone when the tab closes), is sent only as
// an Authorization header to this origin, and never goes into a URL or localStorage. Text from
// the data is set with textContent or drawn on a canvas, never parsed as HTML.
"use strict";

(function () {
  const KEY_ITEM = "crm-pipeline.dashboard.api-key";
  // Relative to /dashboard, so a path prefix in front of the API is kept.
  const SUMMARY_URL = "api/analytics/summary";
  const INSIGHTS_URL = "api/marketing/insights";
  const COLORS = ["#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2", "#65a30d"];
  const charts = {};

  const $ = (id) => document.getElementById(id);

  // --- number formatting ---------------------------------------------------------------------

  // `value` rounded half away from zero to `places` decimals, with thousands separators:
  // 1234.5 -> "1,234.50". The cache files hold exact decimals; a JS number prints back the
  // shortest digits that identify it, which are the file's own digits, so the rounding is done
  // on those digits rather than on the binary float (2.345 gives 2.35, as Python's Decimal).
  function formatDecimal(value, places) {
    if (value === null || value === undefined || !Number.isFinite(Number(value))) return "n/a";
    let text = String(Number(value));
    if (/e/i.test(text)) text = Number(value).toFixed(places + 1); // tiny or huge: rare
    const negative = text.startsWith("-");
    if (negative) text = text.slice(1);
    const [whole, fraction = ""] = text.split(".");
    const padded = fraction.padEnd(places + 1, "0");
    let digits = whole + padded.slice(0, places);
    if (padded.charCodeAt(places) >= 53) {
      // the next digit is 5 or more
      digits = (BigInt(digits) + 1n).toString().padStart(digits.length, "0");
    }
    const intPart = digits.slice(0, digits.length - places) || "0";
    const grouped = intPart.replace(/^0+(?=\d)/, "").replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    const result = places > 0 ? `${grouped}.${digits.slice(digits.length - places)}` : grouped;
    return negative && /[1-9]/.test(digits) ? `-${result}` : result;
  }

  function formatMoney(value, currency) {
    const amount = formatDecimal(value, 2);
    return amount !== "n/a" && currency ? `${amount} ${currency}` : amount;
  }

  const formatCount = (value) => formatDecimal(value, 0);

  // --- fetching -------------------------------------------------------------------------------

  // One cache-first read: the parsed body and the freshness headers the API sends.
  async function getJson(url, key) {
    const response = await fetch(url, {
      headers: { Authorization: `Bearer ${key}`, Accept: "application/json" },
      cache: "no-cache", // revalidate with the ETag: a 304 while the file is current
      credentials: "omit",
      referrerPolicy: "no-referrer",
    });
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    const header = (name) => response.headers.get(name);
    return {
      url,
      ok: response.ok,
      status: response.status,
      body,
      cache: header("X-Cache"),
      age: header("Age"),
      staleSince: header("X-Stale-Since"),
      databaseDownSince: header("X-Database-Unavailable-Since"),
      storeDownSince: header("X-Cache-Store-Unavailable-Since"),
    };
  }

  // --- page states ----------------------------------------------------------------------------

  function showMessage(text, isError) {
    const box = $("message");
    box.textContent = text;
    box.classList.toggle("error", Boolean(isError));
    box.hidden = !text;
  }

  function askForKey(reason) {
    $("content").hidden = true;
    $("stale-banner").hidden = true;
    $("reload").hidden = true;
    $("forget-key").hidden = true;
    $("key-panel").hidden = false;
    showMessage(reason || "", Boolean(reason));
    $("api-key").value = "";
    $("api-key").focus();
    document.body.dataset.state = reason ? "refused" : "needs-key";
  }

  function problemDetail(result) {
    const detail = result.body && typeof result.body.detail === "string" ? result.body.detail : "";
    return detail ? ` ${detail}` : "";
  }

  // 401/403: say what is wrong with the key, forget it, and ask for another one.
  function refused(result) {
    sessionStorage.removeItem(KEY_ITEM);
    const text =
      result.status === 403
        ? `This API key lacks the analytics:read scope (403 Forbidden).${problemDetail(result)} ` +
          "Enter a key with the analytics:read scope."
        : `The API refused this key (401 Unauthorized).${problemDetail(result)} ` +
          "Enter another key with the analytics:read scope.";
    askForKey(text);
  }

  function failed(text) {
    $("key-panel").hidden = true;
    $("reload").hidden = false;
    $("forget-key").hidden = false;
    showMessage(text, true);
    document.body.dataset.state = "error";
  }

  async function load() {
    const key = sessionStorage.getItem(KEY_ITEM);
    if (!key) {
      askForKey("");
      return;
    }
    document.body.dataset.state = "loading";
    showMessage("Loading...", false);
    let results;
    try {
      results = await Promise.all([getJson(SUMMARY_URL, key), getJson(INSIGHTS_URL, key)]);
    } catch (error) {
      failed(`The API could not be reached (${error.message}). Try Reload.`);
      return;
    }
    const refusal = results.find((r) => r.status === 401 || r.status === 403);
    if (refusal) {
      refused(refusal);
      return;
    }
    const failure = results.find((r) => !r.ok || !r.body);
    if (failure) {
      failed(`${failure.url} answered ${failure.status}.${problemDetail(failure)} Try Reload.`);
      return;
    }
    render(results[0], results[1]);
  }

  // --- rendering ------------------------------------------------------------------------------

  function render(summary, insights) {
    $("key-panel").hidden = true;
    showMessage("", false);
    renderFreshness(summary, insights);
    renderTiles(summary.body);
    renderCharts(summary.body, insights.body);
    $("content").hidden = false;
    $("reload").hidden = false;
    $("forget-key").hidden = false;
    document.body.dataset.state = "ready";
  }

  function cacheNote(result) {
    const age = result.age === null ? "" : `, ${formatCount(result.age)} s old`;
    return `X-Cache: ${result.cache || "?"}${age}`;
  }

  function renderFreshness(summary, insights) {
    $("generated-at").textContent = summary.body.generated_at;
    $("generated-at").dateTime = summary.body.generated_at;
    $("insights-generated-at").textContent = insights.body.generated_at;
    $("insights-generated-at").dateTime = insights.body.generated_at;
    $("summary-cache").textContent = cacheNote(summary);
    $("insights-cache").textContent = cacheNote(insights);
    const sources = summary.body.freshness || {};
    const newest = [
      ["ad insights synced", sources.ad_insights_synced_at],
      ["newest lead", sources.leads_created_time],
      ["newest order", sources.orders_created_at],
      ["last DB change", sources.change_log_changed_at],
    ].map(([label, at]) => `${label}: ${at || "none"}`);
    $("sources").textContent = `Data as of ${summary.body.as_of} (${newest.join("; ")}).`;
    renderStaleBanner([summary, insights]);
  }

  // The API serves a file it knows is behind the database (or cannot check) as X-Cache: STALE.
  function renderStaleBanner(results) {
    const stale = results.filter((r) => r.cache === "STALE");
    const banner = $("stale-banner");
    banner.hidden = stale.length === 0;
    if (!stale.length) {
      banner.textContent = "";
      return;
    }
    const parts = [
      `STALE: the API served cached data that is behind the database (${stale
        .map((r) => `${r.url}, generated at ${r.body.generated_at}`)
        .join("; ")}).`,
    ];
    const down = stale.find((r) => r.databaseDownSince);
    if (down) parts.push(`The database has been unavailable since ${down.databaseDownSince}.`);
    else parts.push("A refresh is under way: Reload in a moment.");
    const store = results.find((r) => r.storeDownSince);
    if (store) parts.push(`The cache store has been unavailable since ${store.storeDownSince}.`);
    banner.textContent = parts.join(" ");
  }

  function setTile(kpi, value, note) {
    const tile = document.querySelector(`[data-kpi="${kpi}"]`);
    tile.querySelector(".kpi-value").textContent = value;
    tile.querySelector(".kpi-note").textContent = note || "";
  }

  function renderTiles(summary) {
    const revenue = summary.revenue;
    const mixed = revenue.currency === null && revenue.by_currency.length > 1;
    const perCurrency = revenue.by_currency
      .map((c) => formatMoney(c.total, c.currency))
      .join(", ");
    const mixedNote = mixed ? `several currencies: ${perCurrency}` : "";
    setTile(
      "revenue",
      formatMoney(revenue.total, revenue.currency),
      mixedNote || `${formatCount(revenue.orders)} orders, all time`,
    );
    setTile(
      "last-30-days",
      formatMoney(revenue.last_30_days, revenue.currency),
      `${formatCount(revenue.orders_last_30_days)} orders since ${summary.window_30_days.first_day}`,
    );
    setTile("aov", formatMoney(revenue.average_order_value, revenue.currency), mixedNote);
    const roas = summary.roas;
    setTile(
      "roas",
      roas.roas === null ? "n/a" : `${formatDecimal(roas.roas, 2)}x`,
      `first-touch attribution; Meta-reported: ${
        roas.meta_roas === null ? "n/a" : `${formatDecimal(roas.meta_roas, 2)}x`
      }`,
    );
    const cpl = summary.leads.cost_per_lead;
    setTile(
      "cost-per-lead",
      formatDecimal(cpl.total, 2),
      `all time, in the ad accounts' currency; last 30 days: ${formatDecimal(cpl.last_30_days, 2)}`,
    );
  }

  // --- charts ---------------------------------------------------------------------------------

  function draw(canvasId, config, emptyText) {
    if (charts[canvasId]) charts[canvasId].destroy();
    const canvas = $(canvasId);
    const note = canvas.closest("figure").querySelector(".empty-note");
    const empty = config.data.labels.length === 0;
    note.hidden = !empty;
    note.textContent = empty ? emptyText : "";
    config.options = Object.assign(
      { animation: false, responsive: true, maintainAspectRatio: false },
      config.options || {},
    );
    charts[canvasId] = new Chart(canvas, config);
  }

  function renderCharts(summary, insights) {
    drawRevenueByMonth(summary.revenue.by_month);
    drawSpendAndLeads(summary.leads.by_day, insights.by_day);
    const campaigns = summary.ad_spend.by_campaign.filter((c) => c.cost_per_lead !== null);
    draw(
      "chart-cost-per-lead",
      {
        type: "bar",
        data: {
          labels: campaigns.map((c) => c.campaign_name || c.campaign_id),
          datasets: [
            {
              label: "Cost per lead",
              data: campaigns.map((c) => Number(c.cost_per_lead)),
              backgroundColor: COLORS[3],
            },
          ],
        },
        options: { indexAxis: "y" },
      },
      "No campaign has Meta-reported leads yet.",
    );
    const tiers = summary.customers.by_tier;
    draw(
      "chart-customers-by-tier",
      {
        type: "doughnut",
        data: {
          labels: tiers.map((t) => t.tier),
          datasets: [
            {
              label: "Customers",
              data: tiers.map((t) => t.customers),
              backgroundColor: tiers.map((_, i) => COLORS[i % COLORS.length]),
            },
          ],
        },
      },
      "No customers yet.",
    );
  }

  function drawRevenueByMonth(byMonth) {
    const months = [...new Set(byMonth.map((m) => m.month))].sort();
    const currencies = [...new Set(byMonth.map((m) => m.currency))].sort();
    const datasets = currencies.map((currency, i) => ({
      label: `Revenue (${currency})`,
      data: months.map((month) => {
        const entry = byMonth.find((m) => m.month === month && m.currency === currency);
        return entry ? Number(entry.revenue) : 0;
      }),
      backgroundColor: COLORS[i % COLORS.length],
    }));
    draw(
      "chart-revenue-by-month",
      { type: "bar", data: { labels: months, datasets } },
      "No revenue orders yet.",
    );
  }

  // Spend per day from the insights file, CRM leads per day from the summary, on one time axis.
  function drawSpendAndLeads(leadsByDay, spendByDay) {
    const spend = new Map(spendByDay.map((d) => [d.date, Number(d.spend)]));
    const leads = new Map(leadsByDay.map((d) => [d.date, d.leads]));
    const days = [...new Set([...spend.keys(), ...leads.keys()])].sort();
    draw(
      "chart-spend-leads-by-day",
      {
        type: "bar",
        data: {
          labels: days,
          datasets: [
            {
              label: "Ad spend",
              data: days.map((d) => spend.get(d) || 0),
              backgroundColor: COLORS[0],
              yAxisID: "spend",
            },
            {
              type: "line",
              label: "Leads (CRM)",
              data: days.map((d) => leads.get(d) || 0),
              borderColor: COLORS[1],
              backgroundColor: COLORS[1],
              yAxisID: "leads",
            },
          ],
        },
        options: {
          scales: {
            spend: { position: "left", beginAtZero: true },
            leads: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false } },
          },
        },
      },
      "No ad spend or leads in the last 30 days.",
    );
  }

  // --- wiring ---------------------------------------------------------------------------------

  function start() {
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault(); // never let the browser send the form (its fields into a URL)
      const key = $("api-key").value.trim();
      $("api-key").value = "";
      if (!key) return;
      sessionStorage.setItem(KEY_ITEM, key);
      load();
    });
    $("reload").addEventListener("click", () => load());
    $("forget-key").addEventListener("click", () => {
      sessionStorage.removeItem(KEY_ITEM);
      askForKey("");
    });
    if (typeof Chart === "undefined") {
      failed("The chart library did not load (dashboard/assets/chart.umd.min.js).");
      return;
    }
    load();
  }

  start();
})();
