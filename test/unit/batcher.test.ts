import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Batcher } from '../../server/core/batcher';

test('Batcher hands on everything in order, one batch per interval', async () => {
  const batches: number[][] = [];
  const b = new Batcher<number>((x) => batches.push(x), 30);
  for (let i = 0; i < 1000; i++) b.push(i);
  assert.equal(batches.length, 0, 'nothing before the interval');
  await new Promise((r) => setTimeout(r, 80));
  assert.equal(batches.length, 1);
  assert.deepEqual(batches[0], Array.from({ length: 1000 }, (_, i) => i));
  b.push(1000);
  b.flush();
  assert.deepEqual(batches[1], [1000], 'flush hands on at once');
  b.flush();
  assert.equal(batches.length, 2, 'an empty flush sends nothing');
  b.dispose();
});
