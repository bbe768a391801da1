import { createHash } from 'node:crypto';

/** A stable JSON encoding (sorted object keys) for request hashing. */
export function stableJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null';
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  const obj = v as Record<string, unknown>;
  const keys = Object.keys(obj)
    .filter((k) => obj[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${stableJson(obj[k])}`).join(',')}}`;
}

export function requestHash(type: string, request: unknown, skipBaseDdl: boolean): string {
  return createHash('sha256').update(stableJson({ type, request, skipBaseDdl })).digest('hex');
}
