// The notebook protocol's constants have one source, ipymcp/frontend/protocol.json, which the
// kernel side reads too. TypeScript cannot import JSON with literal types (an op list would widen
// to string[] and no switch over ops could be checked), so this writes the file's content as a
// `const` module, src/protocol.generated.ts (not in git), before every tsc run (jlpm build:lib).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const source = fileURLToPath(new URL('../../ipymcp/frontend/protocol.json', import.meta.url));
const target = fileURLToPath(new URL('../src/protocol.generated.ts', import.meta.url));

// What src/protocol.ts relies on; a key missing or of another type stops the build here.
const SHAPE = {
  protocol: 'number',
  oldest_protocol: 'number',
  announce_target: 'string',
  view_target: 'string',
  load_code: 'string',
  ops: 'string[]',
  view_events: 'string[]',
  kernel_events: 'string[]'
};

function kind(value) {
  if (Array.isArray(value)) {
    return value.every(item => typeof item === 'string') ? 'string[]' : 'array';
  }
  return typeof value;
}

if (!existsSync(source)) {
  console.error(`protocol.mjs: ${source} is missing; build the extension from the ipymcp repository or its sdist`);
  process.exit(1);
}
const json = JSON.parse(readFileSync(source, 'utf8'));
const wrong = Object.entries(SHAPE).filter(([key, type]) => kind(json[key]) !== type);
if (wrong.length) {
  const list = wrong.map(([key, type]) => `${key} (${type} expected, found ${kind(json[key])})`).join(', ');
  console.error(`protocol.mjs: ${source} lacks ${list}`);
  process.exit(1);
}
// Keys starting with "_" are comments.
const spec = Object.fromEntries(Object.entries(json).filter(([key]) => !key.startsWith('_')));
const text =
  '// Generated from ipymcp/frontend/protocol.json by js/scripts/protocol.mjs (jlpm build:lib): do not edit.\n' +
  `export const spec = ${JSON.stringify(spec, null, 2)} as const;\n`;
// Unchanged: leave the file (and tsc's incremental build) alone.
if (!existsSync(target) || readFileSync(target, 'utf8') !== text) {
  writeFileSync(target, text);
}
