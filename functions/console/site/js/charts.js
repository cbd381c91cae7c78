// Stacked bar charts (Chart.js, bundled under vendor/). Each chart is a role="img" element
// whose aria-label summarises it; the same numbers are always in a table next to it.

import { h } from "./dom.js";

// Distinguishable in colour and in greyscale, with enough contrast on white.
const PALETTE = ["#2563eb", "#ea580c", "#059669", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#4b5563",
  "#db2777", "#65a30d"];

const live = new Set();

/** Destroys the charts of the previous view (Chart.js keeps listeners on each). */
export function destroyCharts() {
  for (const chart of live) chart.destroy();
  live.clear();
}

/**
 * A stacked bar chart. labels: the categories; series: [{name, values}]; summary: the
 * aria-label text. horizontal: bars along x (long tenant names read better).
 */
export function stackedBars({ labels, series, summary, valueLabel, categoryLabel = "", horizontal = false, tall = false }) {
  const canvas = h("canvas", { role: "img", "aria-label": summary });
  canvas.textContent = summary; // fallback content for browsers without canvas
  const figure = h(`div.chart${tall ? ".chart-tall" : ""}`, {}, canvas);
  if (typeof window.Chart !== "function") {
    figure.replaceChildren(h("p.muted", { role: "img", "aria-label": summary }, summary));
    return figure;
  }
  const categoryAxis = {
    stacked: true, grid: { display: false }, ticks: { autoSkip: true },
    title: { display: Boolean(categoryLabel), text: categoryLabel },
  };
  const valueAxis = {
    stacked: true, beginAtZero: true, ticks: { precision: 0 },
    title: { display: Boolean(valueLabel), text: valueLabel },
  };
  window.Chart.defaults.font.family = getComputedStyle(document.documentElement).fontFamily;
  window.Chart.defaults.color = "#374151";
  const chart = new window.Chart(canvas, {
    type: "bar",
    data: {
      labels,
      datasets: series.map((s, i) => ({
        label: s.name, data: s.values, backgroundColor: PALETTE[i % PALETTE.length], borderWidth: 0, maxBarThickness: 48,
      })),
    },
    options: {
      indexAxis: horizontal ? "y" : "x",
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      scales: horizontal ? { x: valueAxis, y: categoryAxis } : { x: categoryAxis, y: valueAxis },
      plugins: {
        legend: { position: "bottom", labels: { boxWidth: 12 } },
        tooltip: { mode: "index", intersect: false },
      },
    },
  });
  live.add(chart);
  return figure;
}
