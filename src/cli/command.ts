import { describeCause, isOwnRaTlsError, RaTlsError } from '../errors.js';
import { closestName } from '../util/did-you-mean.js';

/** Where a command reads its environment and writes its output. */
export interface CliIo {
  /** Writes to standard output (what a user copies or evals). */
  readonly stdout: (text: string) => void;
  /** Writes to standard error (progress, warnings, errors). */
  readonly stderr: (text: string) => void;
  readonly env: NodeJS.ProcessEnv;
  /** The process whose signals end long-running commands. */
  readonly process: NodeJS.EventEmitter;
}

/** One subcommand of `pg-ra-tls`, loaded only when it is run. */
export interface CliCommand {
  readonly name: string;
  /** The full `--help` text. */
  readonly help: string;
  /** Runs the command; resolves to the process exit code. Throws RaTlsError on failure. */
  run(args: readonly string[], io: CliIo): Promise<number>;
}

/** Exit codes: success, a failure while running, a mistake on the command line. */
export const ExitCode = { OK: 0, FAILED: 1, USAGE: 2 } as const;

/** A command-line mistake: BAD_CONFIG, and the exit code says "usage". */
export function usageError(message: string): RaTlsError {
  return new RaTlsError('BAD_CONFIG', message, { details: { usage: true } });
}

/**
 * The usage error for a node:util parseArgs failure, with a "did you mean"
 * when an unknown flag is close to one of `flags` (parseArgs names only the
 * flag, never its value).
 */
export function parseArgsError(
  error: unknown,
  command: string,
  flags: readonly string[],
): RaTlsError {
  const message = (error as Error).message;
  const unknown = /Unknown option '(-{1,2}[^'=]+)'/.exec(message)?.[1];
  if (unknown !== undefined) {
    const suggestion = closestName(unknown.replace(/^-+/, ''), flags);
    return usageError(
      `unknown option ${unknown}` +
        (suggestion === undefined ? '' : `; did you mean --${suggestion}?`) +
        `; see pg-ra-tls ${command} --help`,
    );
  }
  return usageError(`${message.replace(/\.$/, '')}; see pg-ra-tls ${command} --help`);
}

/** True for errors made by {@link usageError}. */
export function isUsageError(error: unknown): boolean {
  return isOwnRaTlsError(error, 'BAD_CONFIG') && error.details['usage'] === true;
}

/**
 * One line for an error: `pg-ra-tls: <CODE>: <message>`; with `verbose`, the
 * stack trace and causes follow. Non-RaTlsErrors are reported as INTERNAL,
 * which is a bug to report rather than something the user can fix.
 */
export function formatError(error: unknown, verbose: boolean): string {
  const code = error instanceof RaTlsError ? error.code : 'INTERNAL';
  const message = describeCause(error).replace(/\s*\n\s*/g, ' ');
  let text = `pg-ra-tls: ${code}: ${message}\n`;
  if (verbose) {
    let current: unknown = error;
    while (current !== undefined) {
      text +=
        current instanceof Error
          ? `${current.stack ?? current.message}\n`
          : `${describeCause(current)}\n`;
      current = current instanceof Error ? current.cause : undefined;
      if (current !== undefined) text += 'Caused by: ';
    }
  } else if (code === 'INTERNAL') {
    text += 'pg-ra-tls: run again with --verbose for the stack trace, and report it as a bug\n';
  }
  return text;
}
