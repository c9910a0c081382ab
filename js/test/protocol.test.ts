// The extension's pure parts, in node (no browser): jlpm test (make test-js).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  failure,
  isOp,
  OpError,
  parseKernelMessage,
  PROTOCOL,
  unknownOp,
  wantsAcks
} from '../src/protocol';
import { spec } from '../src/protocol.generated';
import { revisionOf, visible } from '../src/text';

// FNV-1a of "code\0x = 1", as the extension computed it before this file existed.
const PINNED_REVISION = '43203030';
// build-test/test/ -> the repository's ipymcp/frontend/protocol.json
const PROTOCOL_JSON = join(__dirname, '..', '..', '..', 'ipymcp', 'frontend', 'protocol.json');

test('the constants are protocol.json, comments left out', () => {
  const json = JSON.parse(readFileSync(PROTOCOL_JSON, 'utf8'));
  const withoutComments = Object.fromEntries(Object.entries(json).filter(([key]) => !key.startsWith('_')));
  assert.deepEqual(spec, withoutComments);
  assert.equal(PROTOCOL, json.protocol);
  assert.ok(json.ops.every(isOp));
});

test('a request with a known op is parsed with its arguments', () => {
  const message = parseKernelMessage({ id: 7, op: 'read_notebook', args: { start: 2 } });
  assert.deepEqual(message, { kind: 'request', request: { id: 7, op: 'read_notebook', args: { start: 2 } } });
});

test('missing or malformed arguments become none', () => {
  for (const args of [undefined, null, 'x', [1]]) {
    const message = parseKernelMessage({ id: 1, op: 'hello', args });
    assert.deepEqual(message, { kind: 'request', request: { id: 1, op: 'hello', args: {} } });
  }
});

test('an op this extension does not know is told apart, with its id', () => {
  assert.deepEqual(parseKernelMessage({ id: 3, op: 'teleport', args: {} }), { kind: 'unknown_op', id: 3, op: 'teleport' });
  assert.deepEqual(parseKernelMessage({ id: 4 }), { kind: 'unknown_op', id: 4, op: 'undefined' });
});

test('the state event, and messages without an id, are not requests', () => {
  assert.deepEqual(parseKernelMessage({ event: 'state', came_back: 1 }), {
    kind: 'event',
    event: { event: 'state', came_back: true }
  });
  for (const data of [{ op: 'hello' }, { id: null, op: 'hello' }, { event: 'later' }, [], 'x', null]) {
    assert.deepEqual(parseKernelMessage(data), { kind: 'ignored' });
  }
});

test('acks go only to kernels that said they speak protocol 2 or later', () => {
  assert.equal(wantsAcks(null), false); // not said yet (a view connected after a page reload)
  assert.equal(wantsAcks(1), false);
  assert.equal(wantsAcks(2), true);
  assert.equal(wantsAcks(3), true);
});

test('an unknown op is answered with a code and the words older kernels look for', () => {
  const reply = unknownOp(5, 'teleport');
  assert.equal(reply.ok, false);
  assert.equal(reply.code, 'unknown_op');
  assert.equal(reply.id, 5);
  assert.match(reply.error, /^unknown op teleport \(frontend protocol \d+\); update the ipymcp labextension$/);
});

test('failures carry a code only when the kernel can act on it', () => {
  const stale = failure(1, new OpError('stale_cell', 'the user changed cell c1'));
  assert.deepEqual(stale, { id: 1, ok: false, error: 'the user changed cell c1', code: 'stale_cell', stale: true });
  assert.deepEqual(failure(2, new Error('no cell with id "x"')), {
    id: 2,
    ok: false,
    error: 'no cell with id "x"',
    stale: false
  });
  assert.equal(failure(3, 'plain text').error, 'plain text');
});

test('a revision depends on the cell type and source only, and is stable', () => {
  assert.equal(revisionOf('code', 'x = 1'), revisionOf('code', 'x = 1'));
  assert.notEqual(revisionOf('code', 'x = 1'), revisionOf('markdown', 'x = 1'));
  assert.notEqual(revisionOf('code', 'x = 1'), revisionOf('code', 'x = 2'));
  assert.match(revisionOf('code', ''), /^[0-9a-f]{8}$/);
  assert.equal(revisionOf('code', 'x = 1'), PINNED_REVISION);
});

test('format and control characters become visible markers; newlines and tabs stay', () => {
  assert.equal(visible('a\u202Eb'), 'a⟦U+202E⟧b');
  assert.equal(visible('zero\u200Bwidth'), 'zero⟦U+200B⟧width');
  assert.equal(visible('bell\u0007'), 'bell⟦U+0007⟧');
  assert.equal(visible('line\n\tindented'), 'line\n\tindented');
});
