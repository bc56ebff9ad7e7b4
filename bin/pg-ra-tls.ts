#!/usr/bin/env node
/** The pg-ra-tls command line; the commands live in src/cli/. */
import { main } from '../src/cli/main.js';

process.exitCode = await main(process.argv.slice(2));
