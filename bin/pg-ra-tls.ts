#!/usr/bin/env node
/** The pg-ra-tls command line. */
process.stderr.write('pg-ra-tls: the command line is not built yet\n');
process.exitCode = 2;
