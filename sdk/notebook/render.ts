/**
 * Pure renderers: progress bars and tables as HTML, line charts as inline SVG, and plain-text
 * versions of each for a terminal. Strings in, strings out; nothing here displays anything.
 */
import { STATE } from "../protocol/mod.ts";

/** Escapes text for HTML element content and attribute values. */
export function escapeHtml(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}

/** What a progress bar shows. */
export interface ProgressState {
  /** Finished so far (failures included). */
  done: number;
  total: number;
  /** Of `done`, how many failed (or were revoked). */
  failed?: number;
  /** Shown before the counts. */
  label?: string;
  /** Milliseconds since the work started, for the rate. */
  elapsedMs?: number;
}

function fraction(s: ProgressState): number {
  return s.total > 0 ? Math.min(1, Math.max(0, s.done / s.total)) : 1;
}

function counts(s: ProgressState): string {
  const failed = s.failed ? `, ${s.failed} failed` : "";
  const rate = s.elapsedMs !== undefined && s.elapsedMs > 0 && s.done > 0
    ? ` · ${(s.elapsedMs / 1000).toFixed(1)} s · ${(s.done / (s.elapsedMs / 1000)).toFixed(1)}/s`
    : "";
  return `${s.done}/${s.total} (${Math.round(fraction(s) * 100)}%)${failed}${rate}`;
}

/** A progress bar as HTML: a green bar for successes, a red one for failures, and the counts. */
export function renderProgress(s: ProgressState): string {
  const ok = s.total > 0 ? Math.max(0, s.done - (s.failed ?? 0)) / s.total : 1;
  const bad = s.total > 0 ? (s.failed ?? 0) / s.total : 0;
  const pct = (x: number) => `${(Math.min(1, Math.max(0, x)) * 100).toFixed(1)}%`;
  const label = s.label ? `<b>${escapeHtml(s.label)}</b> ` : "";
  return `<div class="celerity-progress" style="font-family:sans-serif;font-size:13px;margin:4px 0">` +
    `<div style="display:flex;width:100%;max-width:480px;height:14px;background:#e5e7eb;border-radius:3px;overflow:hidden">` +
    `<div style="width:${pct(ok)};background:#16a34a"></div><div style="width:${pct(bad)};background:#dc2626"></div></div>` +
    `<div>${label}${escapeHtml(counts(s))}</div></div>`;
}

/** A progress bar as one line of text: `label [#######-------] 7/14 (50%)`. */
export function textProgress(s: ProgressState, width = 30): string {
  const filled = Math.round(fraction(s) * width);
  return `${s.label ? `${s.label} ` : ""}[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${counts(s)}`;
}

/** One table row: column name → value. */
export type Row = Readonly<Record<string, unknown>>;

/** Options of {@link renderTable} and {@link textTable}. */
export interface TableOptions {
  /** Columns in order; default: every key of every row, in order of first appearance. */
  columns?: readonly string[];
  /** A caption above the table. */
  caption?: string;
  /** Rows shown at most; the rest are counted in a last line. Default 200. */
  maxRows?: number;
}

/** Formats one cell: dates as ISO, objects as JSON, nothing for null and undefined. */
export function formatCell(value: unknown): string {
  if (value === null || value === undefined) return "";
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? "Invalid Date" : value.toISOString();
  if (typeof value === "object") {
    let json: string;
    try {
      json = JSON.stringify(value, (_k, v) => (typeof v === "bigint" ? v.toString() : v));
    } catch {
      json = String(value);
    }
    return json.length > 200 ? `${json.slice(0, 199)}…` : json;
  }
  return String(value);
}

function columnsOf(rows: readonly Row[], options: TableOptions): string[] {
  if (options.columns) return [...options.columns];
  const seen = new Set<string>();
  for (const row of rows) for (const key of Object.keys(row)) seen.add(key);
  return [...seen];
}

/** Colours of task states in tables, so a column of states reads at a glance. */
const STATE_COLOURS: Readonly<Record<string, string>> = {
  [STATE.success]: "#15803d",
  [STATE.failure]: "#b91c1c",
  [STATE.revoked]: "#6b7280",
  [STATE.retry]: "#b45309",
  [STATE.started]: "#1d4ed8",
  [STATE.received]: "#1d4ed8",
  [STATE.pending]: "#6b7280",
};

/** Rows as an HTML table. Every value and header is escaped. */
export function renderTable(rows: readonly Row[], options: TableOptions = {}): string {
  const columns = columnsOf(rows, options);
  const max = options.maxRows ?? 200;
  const cell = "padding:2px 8px;border-bottom:1px solid #e5e7eb;text-align:left;vertical-align:top";
  const head = columns.map((c) => `<th style="${cell}">${escapeHtml(c)}</th>`).join("");
  const body = rows.slice(0, max).map((row) => {
    const tds = columns.map((c) => {
      const v = row[c];
      const colour = typeof v === "string" ? STATE_COLOURS[v] : undefined;
      const align = typeof v === "number" ? ";text-align:right;font-variant-numeric:tabular-nums" : "";
      const style = `${cell}${align}${colour ? `;color:${colour};font-weight:600` : ""}`;
      return `<td style="${style}">${escapeHtml(formatCell(v))}</td>`;
    }).join("");
    return `<tr>${tds}</tr>`;
  }).join("");
  const more = rows.length > max
    ? `<tr><td colspan="${columns.length}" style="${cell};color:#6b7280">… ${rows.length - max} more rows</td></tr>`
    : "";
  const caption = options.caption ? `<caption style="text-align:left;font-weight:600">${escapeHtml(options.caption)}</caption>` : "";
  const empty = rows.length === 0 ? `<tr><td style="${cell};color:#6b7280">(no rows)</td></tr>` : "";
  return `<table class="celerity-table" style="border-collapse:collapse;font-family:sans-serif;font-size:13px">${caption}` +
    `<thead><tr>${head}</tr></thead><tbody>${body}${more}${empty}</tbody></table>`;
}

/** Rows as aligned plain text, for a terminal. */
export function textTable(rows: readonly Row[], options: TableOptions = {}): string {
  const columns = columnsOf(rows, options);
  const max = options.maxRows ?? 200;
  const cells = rows.slice(0, max).map((row) => columns.map((c) => formatCell(row[c]).replace(/\s+/g, " ")));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((r) => r[i]!.length)));
  const line = (values: string[]) => values.map((v, i) => v.padEnd(widths[i]!)).join("  ").trimEnd();
  const out = [line(columns), line(widths.map((w) => "-".repeat(w))), ...cells.map(line)];
  if (rows.length > max) out.push(`… ${rows.length - max} more rows`);
  if (options.caption) out.unshift(options.caption);
  return out.join("\n");
}

/** One line of a chart: points as [x, y]; x is a number or a Date (a time axis). */
export interface Series {
  name: string;
  points: ReadonlyArray<readonly [number | Date, number]>;
}

/** Options of {@link renderChart}. */
export interface ChartOptions {
  /** Pixels; default 560 × 220. */
  width?: number;
  height?: number;
  title?: string;
  /** Label of the y axis, e.g. "tasks/s". */
  yLabel?: string;
  /** How x values are labelled: as UTC clock times, or as numbers. Default: time when x values are Dates or epoch milliseconds. */
  x?: "time" | "number";
}

const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"];

/** Accepts one series, several, or plain numbers (indexed 0, 1, 2, …). */
export function toSeries(input: Series | readonly Series[] | readonly number[]): Series[] {
  if (Array.isArray(input)) {
    if (input.length === 0) return [];
    if (typeof input[0] === "number") return [{ name: "", points: (input as readonly number[]).map((y, i) => [i, y] as const) }];
    return [...(input as readonly Series[])];
  }
  return [input as Series];
}

const xNumber = (x: number | Date) => (x instanceof Date ? x.getTime() : x);

function isTimeAxis(series: readonly Series[], options: ChartOptions): boolean {
  if (options.x) return options.x === "time";
  const first = series.find((s) => s.points.length > 0)?.points[0]?.[0];
  // Epoch milliseconds after 2001 are taken for times; an index or a small number is not.
  return first instanceof Date || (typeof first === "number" && first > 1e12);
}

function formatX(x: number, time: boolean): string {
  if (!time) return formatNumber(x);
  return new Date(x).toISOString().slice(11, 19);
}

function formatNumber(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  if (Number.isInteger(n)) return String(n);
  return Math.abs(n) >= 100 ? n.toFixed(0) : Math.abs(n) >= 1 ? n.toFixed(1) : n.toPrecision(2);
}

/** A small line chart as an inline SVG element: axes, min/max labels, one line per series, a legend. */
export function renderChart(input: Series | readonly Series[] | readonly number[], options: ChartOptions = {}): string {
  const series = toSeries(input);
  const width = options.width ?? 560;
  const height = options.height ?? 220;
  const pad = { left: 48, right: 12, top: options.title ? 26 : 10, bottom: 34 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const time = isTimeAxis(series, options);
  const all = series.flatMap((s) => s.points.map(([x, y]) => [xNumber(x), y] as const)).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" class="celerity-chart" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`);
  if (options.title) parts.push(`<text x="${pad.left}" y="16" font-size="13" font-weight="600">${escapeHtml(options.title)}</text>`);
  parts.push(`<rect x="${pad.left}" y="${pad.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#d1d5db"/>`);
  if (all.length === 0) {
    parts.push(`<text x="${pad.left + plotW / 2}" y="${pad.top + plotH / 2}" text-anchor="middle" fill="#6b7280">no data</text></svg>`);
    return parts.join("");
  }
  const xs = all.map(([x]) => x);
  const ys = all.map(([, y]) => y);
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(0, ...ys), Math.max(...ys)];
  if (x0 === x1) [x0, x1] = [x0 - 1, x1 + 1];
  if (y0 === y1) y1 = y0 + 1;
  const px = (x: number) => (pad.left + ((x - x0) / (x1 - x0)) * plotW).toFixed(1);
  const py = (y: number) => (pad.top + plotH - ((y - y0) / (y1 - y0)) * plotH).toFixed(1);
  // Axis labels: the y range and the x range; enough to read a small chart.
  parts.push(`<text x="${pad.left - 4}" y="${pad.top + 4}" text-anchor="end" fill="#374151">${escapeHtml(formatNumber(y1))}</text>`);
  parts.push(`<text x="${pad.left - 4}" y="${pad.top + plotH}" text-anchor="end" fill="#374151">${escapeHtml(formatNumber(y0))}</text>`);
  parts.push(`<text x="${pad.left}" y="${pad.top + plotH + 14}" fill="#374151">${escapeHtml(formatX(x0, time))}</text>`);
  parts.push(`<text x="${pad.left + plotW}" y="${pad.top + plotH + 14}" text-anchor="end" fill="#374151">${escapeHtml(formatX(x1, time))}</text>`);
  if (options.yLabel) {
    parts.push(`<text x="12" y="${pad.top + plotH / 2}" transform="rotate(-90 12 ${pad.top + plotH / 2})" text-anchor="middle" fill="#374151">${escapeHtml(options.yLabel)}</text>`);
  }
  let legendX = pad.left;
  series.forEach((s, i) => {
    const colour = PALETTE[i % PALETTE.length]!;
    const pts = s.points.map(([x, y]) => [xNumber(x), y] as const).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    if (pts.length === 1) parts.push(`<circle cx="${px(pts[0]![0])}" cy="${py(pts[0]![1])}" r="3" fill="${colour}"/>`);
    else if (pts.length > 1) {
      parts.push(`<polyline fill="none" stroke="${colour}" stroke-width="1.5" points="${pts.map(([x, y]) => `${px(x)},${py(y)}`).join(" ")}"/>`);
    }
    if (s.name) {
      parts.push(`<rect x="${legendX}" y="${height - 11}" width="10" height="3" fill="${colour}"/>`);
      parts.push(`<text x="${legendX + 14}" y="${height - 6}" fill="#111827">${escapeHtml(s.name)}</text>`);
      legendX += 24 + s.name.length * 6.5;
    }
  });
  parts.push("</svg>");
  return parts.join("");
}

const SPARKS = "▁▂▃▄▅▆▇█";

/** A chart as text: one sparkline per series with its range, for a terminal. */
export function textChart(input: Series | readonly Series[] | readonly number[], options: ChartOptions = {}): string {
  const series = toSeries(input);
  const time = isTimeAxis(series, options);
  const lines = options.title ? [options.title] : [];
  for (const s of series) {
    const ys = s.points.map(([, y]) => y).filter(Number.isFinite);
    if (ys.length === 0) {
      lines.push(`${s.name || "series"}: no data`);
      continue;
    }
    const lo = Math.min(0, ...ys);
    const hi = Math.max(...ys);
    const spark = ys.map((y) => SPARKS[hi === lo ? 0 : Math.round(((y - lo) / (hi - lo)) * (SPARKS.length - 1))]).join("");
    const xs = s.points.map(([x]) => xNumber(x));
    const range = `${formatX(xs[0]!, time)}…${formatX(xs[xs.length - 1]!, time)}`;
    lines.push(`${s.name ? `${s.name}: ` : ""}${spark}  (max ${formatNumber(hi)}, ${range})`);
  }
  return lines.join("\n");
}
