/**
 * Pure reading of README.md for test/readme.test.ts: its fenced code blocks,
 * its error table, shell command lines, and the rewriting of a snippet's
 * package imports. No I/O here: everything takes and returns strings.
 */

/** One fenced code block of a Markdown document. */
export interface FencedBlock {
  /** First word of the info string (`ts`, `sh`), or `''` when there is none. */
  readonly language: string;
  /** Further words of the info string, e.g. `['prisma']` for ```ts prisma. */
  readonly tags: readonly string[];
  /** The code between the fences, ending with a newline. */
  readonly code: string;
  /** 1-based line of the opening fence. */
  readonly line: number;
  /** Text of the nearest heading above the block, `''` before any heading. */
  readonly heading: string;
}

/** The fenced code blocks of `markdown`, in order (``` or ~~~ fences, CommonMark style). */
export function fencedBlocks(markdown: string): FencedBlock[] {
  const blocks: FencedBlock[] = [];
  const lines = markdown.split('\n');
  let heading = '';
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index] ?? '';
    const headingMatch = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (headingMatch !== null) {
      heading = headingMatch[1] ?? '';
      continue;
    }
    const open = /^ {0,3}(`{3,}|~{3,})\s*([^`]*)$/.exec(line);
    if (open === null) continue;
    const fence = open[1] ?? '```';
    const [language = '', ...tags] = (open[2] ?? '').trim().split(/\s+/).filter(Boolean);
    const body: string[] = [];
    let end = index + 1;
    while (end < lines.length && !isClosingFence(lines[end] ?? '', fence)) {
      body.push(lines[end] ?? '');
      end++;
    }
    blocks.push({ language, tags, code: `${body.join('\n')}\n`, line: index + 1, heading });
    index = end;
  }
  return blocks;
}

function isClosingFence(line: string, fence: string): boolean {
  const match = /^ {0,3}(`{3,}|~{3,})\s*$/.exec(line);
  return match?.[1] !== undefined && match[1][0] === fence[0] && match[1].length >= fence.length;
}

/**
 * The codes each row of the table under the `## Error codes` heading names in
 * its first cell: `` | `A` | `` gives `['A']`, `` | `A`, `B` | `` gives `['A', 'B']``.
 * Header and separator rows name none and are left out.
 */
export function errorTableRows(markdown: string): string[][] {
  const rows: string[][] = [];
  let inSection = false;
  for (const line of markdown.split('\n')) {
    if (/^#{1,6}\s/.test(line)) {
      inSection = /^##\s+Error codes\s*$/.test(line);
      continue;
    }
    if (!inSection || !line.startsWith('|')) continue;
    const firstCell = line.split('|')[1] ?? '';
    const codes = [...firstCell.matchAll(/`([^`]+)`/g)].map((match) => match[1] ?? '');
    if (codes.length > 0) rows.push(codes);
  }
  return rows;
}

/**
 * The command lines of a shell script or ```sh block: comments (`#` at the
 * start or after whitespace, and the `#!` line) removed, whitespace trimmed,
 * empty lines dropped.
 */
export function shellCommands(script: string): string[] {
  return script
    .split('\n')
    .map((line) => line.replace(/(^|\s)#.*$/, '').trim())
    .filter((line) => line.length > 0);
}

/** The names the README's first ```ts block defines for every other block. */
export const SETUP_NAMES = ['connectionString', 'options'] as const;

/** Whether `code` declares `name` itself (`const|let|var name`). */
export function declares(code: string, name: string): boolean {
  return new RegExp(`\\b(?:const|let|var)\\s+${name}\\b`).test(code);
}

/**
 * Whether `code` reads `name` as a variable: not as a property key
 * (`{ connectionString: url }`) and not as a member (`stack.options`).
 */
export function reads(code: string, name: string): boolean {
  return new RegExp(`(?<![.\\w$])${name}\\b(?!\\s*:)`).test(stripComments(code));
}

function stripComments(code: string): string {
  return code.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
}

/** Whether `code` needs the setup block prepended: it reads a setup name it does not declare. */
export function needsSetup(code: string): boolean {
  return SETUP_NAMES.some((name) => reads(code, name) && !declares(code, name));
}

/**
 * `code` with every module specifier (`from '…'`, `import '…'`, `import('…')`)
 * passed through `replace`; specifiers it returns undefined for stay as they are.
 */
export function rewriteImports(
  code: string,
  replace: (specifier: string) => string | undefined,
): string {
  return code.replace(
    /(\bfrom\s*|\bimport\s*\(?\s*)(['"])([^'"\n]+)\2/g,
    (whole, keyword: string, quote: string, specifier: string) => {
      const replacement = replace(specifier);
      return replacement === undefined ? whole : `${keyword}${quote}${replacement}${quote}`;
    },
  );
}

/** The module specifiers `code` imports, in order. */
export function importedSpecifiers(code: string): string[] {
  const found: string[] = [];
  rewriteImports(code, (specifier) => {
    found.push(specifier);
    return undefined;
  });
  return found;
}
