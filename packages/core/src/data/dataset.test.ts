import { describe, expect, it } from 'vitest';
import { Dataset } from './dataset.js';

describe('Dataset.evenlySpaced', () => {
  // Ten examples sorted by label, two per class, as the shared splits are sorted.
  const data = new Dataset(
    Array.from({ length: 10 }, (_, i) => ({ id: 100 + i, inputIds: [101, 102], tokenTypeIds: [0, 0], label: Math.floor(i / 2) })),
    ['a', 'b', 'c', 'd', 'e'],
  );

  it('takes evenly spaced examples, keeping their ids, so every class of a sorted file is there', () => {
    const sub = data.evenlySpaced(5);
    expect(sub.examples.map((e) => e.id)).toEqual([100, 102, 104, 106, 108]);
    expect(new Set(sub.examples.map((e) => e.label)).size).toBe(5);
  });

  it('is the whole dataset when n is undefined or not smaller', () => {
    expect(data.evenlySpaced(undefined)).toBe(data);
    expect(data.evenlySpaced(10)).toBe(data);
    expect(data.evenlySpaced(3).examples.map((e) => e.id)).toEqual([100, 103, 106]);
  });
});
