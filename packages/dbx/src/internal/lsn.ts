import { DbxError } from '../errors.js';

const LSN = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

/** Parses a PostgreSQL LSN (`16/B374D848`) to a bigint byte position. */
export function parseLsn(text: string): bigint {
  const m = LSN.exec(text);
  if (!m)
    throw new DbxError('DBX_INVALID_TOKEN', 'not a read-your-writes token (expected an LSN like 0/16B3748)');
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

export function maxLsn(a: bigint | null, b: bigint | null): bigint | null {
  if (a === null) return b;
  if (b === null) return a;
  return a > b ? a : b;
}
