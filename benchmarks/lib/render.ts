/**
 * Renders a run's results: the console table, the Markdown summary and the
 * SVG chart of ratios (hand-written: horizontal bars against a target line,
 * plain enough for a GitHub README).
 */
import type { BenchResults, ChartPanel, Row, Section, TargetResult } from './results.js';

/** A figure with sensible precision for its unit. */
export function formatValue(value: number, unit: string): string {
  if (!Number.isFinite(value)) return 'n/a';
  if (unit === 'q/s' || unit === 'conn/s')
    return `${Math.round(value).toLocaleString('en-US')} ${unit}`;
  const digits = Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 10 ? 1 : 2;
  return `${value.toFixed(digits)} ${unit}`;
}

/** A ratio as `1.03×`. */
export function formatRatio(ratio: number | undefined): string {
  return ratio === undefined || !Number.isFinite(ratio) ? '' : `${ratio.toFixed(2)}×`;
}

function targetLine(target: TargetResult): string {
  const verdict = target.verdict === 'met' ? 'met' : target.verdict.toUpperCase();
  const spread = formatSpread(target);
  return `${verdict.padEnd(12)} ${target.description}: ${formatValue(target.measured, target.unit)}${spread === '' ? '' : ` (p25–p75 ${spread})`} (target ${target.target})`;
}

/** A target's p25–p75 spread as `0.95–1.02×`, or '' without one. */
function formatSpread(target: TargetResult): string {
  if (target.spread === undefined) return '';
  const [low, high] = target.spread;
  return target.unit === '×'
    ? `${low.toFixed(2)}–${formatRatio(high)}`
    : `${formatValue(low, target.unit)}–${formatValue(high, target.unit)}`;
}

/** The plain-text table printed at the end of a run. */
export function renderConsole(results: BenchResults): string {
  const lines: string[] = [];
  for (const section of results.sections) {
    lines.push('', `== ${section.title}`);
    for (const row of section.rows) {
      const p95 = row.p95 === undefined ? '' : `p95 ${formatValue(row.p95, row.unit)}`;
      const ratio = row.ratio === undefined ? '' : formatRatio(row.ratio);
      lines.push(
        `  ${truncate(row.label, 86).padEnd(86)} ${formatValue(row.median, row.unit).padStart(14)} ${p95.padStart(16)} ${ratio.padStart(7)}`,
      );
    }
  }
  lines.push('', '== Targets (reported, never asserted)');
  for (const target of results.targets) lines.push(`  ${targetLine(target)}`);
  for (const error of results.errors) lines.push(`  SUITE FAILED: ${error}`);
  return lines.join('\n');
}

function truncate(text: string, width: number): string {
  return text.length <= width ? text : `${text.slice(0, width - 1)}…`;
}

function escapeCell(text: string): string {
  return text.replace(/\|/g, '\\|');
}

function sectionTable(section: Section): string {
  const lines = [
    `### ${section.title}`,
    '',
    section.method,
    '',
    '| Measurement | Median | p95 | Ratio | Ratio to |',
    '|---|---:|---:|---:|---|',
  ];
  for (const row of section.rows) lines.push(rowLine(row));
  return lines.join('\n');
}

function rowLine(row: Row): string {
  const label = row.note === undefined ? row.label : `${row.label} (${row.note})`;
  return `| ${escapeCell(label)} | ${formatValue(row.median, row.unit)} | ${row.p95 === undefined ? '' : formatValue(row.p95, row.unit)} | ${formatRatio(row.ratio)} | ${escapeCell(row.ratioTo ?? '')} |`;
}

/** The targets as a Markdown table. */
export function targetsTable(targets: readonly TargetResult[]): string {
  const lines = [
    '| Target | Measured (median) | Spread (p25–p75 over rounds) | Goal | Verdict |',
    '|---|---:|---:|---:|---|',
  ];
  for (const target of targets) {
    lines.push(
      `| ${escapeCell(target.description)} | ${formatValue(target.measured, target.unit)} | ${formatSpread(target)} | ${target.target} | ${target.verdict === 'met' ? 'met' : `**${target.verdict}**`} |`,
    );
  }
  return lines.join('\n');
}

/** Where and with what the run was measured, as Markdown. */
export function environmentLine(results: BenchResults): string {
  const { machine, versions } = results;
  const deps = Object.entries(versions)
    .map(([name, version]) => `${name} ${version}`)
    .join(', ');
  return (
    `Measured ${results.startedAt.slice(0, 10)} (${results.mode} run, ${Math.round(results.durationSeconds)} s) on ` +
    `${machine.cores} × ${machine.cpu}, ${machine.memoryGiB} GiB, ${machine.os}` +
    (machine.loadAverage === undefined
      ? ''
      : ` (load average ${machine.loadAverage.start.toFixed(1)} at the start, ${machine.loadAverage.end.toFixed(1)} at the end)`) +
    `; ${deps}. ` +
    'Everything on loopback: Postgres, sidecar, PCCS and guest agent in a separate server process.' +
    (results.partial === undefined
      ? ''
      : ` Partial run: only ${results.partial.join(', ')} measured then; every other section ` +
        'is from an earlier run.')
  );
}

/** The full Markdown summary (latest.md). */
export function renderMarkdown(results: BenchResults): string {
  const parts = [
    '# pg-ra-tls benchmarks',
    '',
    environmentLine(results),
    '',
    '![Connect latency and throughput ratios](chart.svg)',
    '',
    '## Targets',
    '',
    'Reported, never asserted: a slow machine does not fail CI.',
    '',
    targetsTable(results.targets),
    '',
    '## Results',
    '',
    ...results.sections.flatMap((section) => [sectionTable(section), '']),
  ];
  if (results.errors.length > 0) {
    parts.push('## Suites that failed', '', ...results.errors.map((error) => `- ${error}`), '');
  }
  return parts.join('\n');
}

const CHART = {
  width: 760,
  labelWidth: 360,
  barArea: 330,
  rowHeight: 24,
  barHeight: 14,
  titleHeight: 34,
  gap: 18,
} as const;

function xml(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;');
}

/** The SVG chart: one panel per {@link ChartPanel}, bars of ratios and a dashed target line. */
export function renderSvg(panels: readonly ChartPanel[], caption: string): string {
  const body: string[] = [];
  let y = 10;
  for (const panel of panels) {
    const finite = panel.bars.map((bar) => bar.ratio).filter((ratio) => Number.isFinite(ratio));
    const scaleMax = Math.max(panel.target, ...finite) * 1.15;
    const x0 = CHART.labelWidth;
    const scale = (ratio: number) => (Math.max(ratio, 0) / scaleMax) * CHART.barArea;
    body.push(`<text x="10" y="${y + 18}" class="title">${xml(panel.title)}</text>`);
    y += CHART.titleHeight;
    const top = y;
    const bottom = top + panel.bars.length * CHART.rowHeight;
    const targetX = x0 + scale(panel.target);
    const oneX = x0 + scale(1);
    // Reference lines first, so bars and values are drawn over them.
    body.push(
      `<line x1="${oneX.toFixed(1)}" y1="${top - 4}" x2="${oneX.toFixed(1)}" y2="${bottom - 6}" class="unit"/>`,
      `<line x1="${targetX.toFixed(1)}" y1="${top - 4}" x2="${targetX.toFixed(1)}" y2="${bottom - 6}" class="target"/>`,
    );
    for (const bar of panel.bars) {
      const ratio = Number.isFinite(bar.ratio) ? bar.ratio : 0;
      const met = panel.higherIsBetter ? ratio >= panel.target : ratio <= panel.target;
      const verdict = bar.judged === false ? 'context' : met ? 'met' : 'missed';
      const width = scale(ratio);
      body.push(
        `<text x="${x0 - 8}" y="${y + CHART.barHeight - 2}" class="label" text-anchor="end">${xml(bar.label)}</text>`,
        `<rect x="${x0}" y="${y}" width="${width.toFixed(1)}" height="${CHART.barHeight}" class="${verdict}"/>`,
        `<text x="${(x0 + width + 6).toFixed(1)}" y="${y + CHART.barHeight - 2}" class="value">${Number.isFinite(bar.ratio) ? `${bar.ratio.toFixed(2)}×` : 'n/a'}</text>`,
      );
      y += CHART.rowHeight;
    }
    body.push(
      `<text x="${targetX.toFixed(1)}" y="${y + 8}" class="note" text-anchor="middle">target ${panel.target}×</text>`,
    );
    y += CHART.gap + 8;
  }
  body.push(`<text x="10" y="${y + 4}" class="note">${xml(caption)}</text>`);
  const height = y + 16;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${CHART.width}" height="${height}" viewBox="0 0 ${CHART.width} ${height}" role="img" aria-label="pg-ra-tls benchmark ratios">`,
    '<style>',
    'text{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Helvetica,Arial,sans-serif;fill:#24292f}',
    '.title{font-size:14px;font-weight:600}.label{font-size:12px}',
    '.value{font-size:12px;paint-order:stroke;stroke:#ffffff;stroke-width:3px}',
    '.note{font-size:11px;fill:#57606a}',
    '.met{fill:#2da44e}.missed{fill:#d1242f}.context{fill:#8c959f}',
    '.target{stroke:#24292f;stroke-width:1.5;stroke-dasharray:4 3}.unit{stroke:#8c959f;stroke-width:1}',
    '</style>',
    `<rect width="${CHART.width}" height="${height}" fill="#ffffff"/>`,
    ...body,
    '</svg>',
    '',
  ].join('\n');
}
