import { RaTlsError } from '../errors.js';

/** The two roles a teesql cluster provisions (docs/protocol.md §5). */
export const TEESQL_ROLES: readonly string[] = Object.freeze(['teesql_read', 'teesql_readwrite']);

const CLUSTER_SECRET = /^[0-9a-f]{64}$/;

/**
 * Checks that `user`/`password` look like a teesql credential: role
 * `teesql_read` or `teesql_readwrite`, password the 32-byte cluster secret as
 * 64 lowercase hex characters (docs/protocol.md §5). Runs before any network I/O so a
 * mistyped DATABASE_URL fails fast instead of after a TDX verification.
 * Throws BAD_CREDENTIALS; the message never contains the password.
 */
export function checkTeesqlCredentials(
  user: string | undefined,
  password: string | undefined,
): void {
  if (user === undefined || !TEESQL_ROLES.includes(user)) {
    throw new RaTlsError(
      'BAD_CREDENTIALS',
      `${user === undefined ? 'no user is set' : `user ${JSON.stringify(user)} is not a teesql role`}: ` +
        'the teesql sidecar accepts teesql_read or teesql_readwrite ' +
        '(pass allowCustomRoles: true to connect to a server with other roles)',
      { details: { user: user ?? null } },
    );
  }
  if (password === undefined || !CLUSTER_SECRET.test(password)) {
    throw new RaTlsError(
      'BAD_CREDENTIALS',
      `the password of ${user} is ${password === undefined ? 'missing' : 'not the cluster secret format'}: ` +
        'teesql passwords are the 32-byte cluster secret as 64 lowercase hex characters; ' +
        'copy DATABASE_URL exactly as issued (pass allowCustomRoles: true to skip this check)',
      { details: { user } },
    );
  }
}
