/** Time-ordered request ids (UUIDv7). */
import { randomFillSync } from 'node:crypto';

const POOL_SIZE = 4096;
const pool = Buffer.allocUnsafe(POOL_SIZE);
let offset = POOL_SIZE;

/**
 * A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits. Request ids are the
 * coordinator's idempotency keys; time-ordered keys append to the right edge of its B-tree instead
 * of splitting pages all over it, as random v4 ids would.
 */
export function uuidv7(): string {
  if (offset + 10 > POOL_SIZE) {
    randomFillSync(pool);
    offset = 0;
  }
  const ms = Date.now();
  const b = Buffer.allocUnsafe(16);
  b.writeUIntBE(ms, 0, 6);
  pool.copy(b, 6, offset, offset + 10);
  offset += 10;
  b[6] = 0x70 | (b[6]! & 0x0f);
  b[8] = 0x80 | (b[8]! & 0x3f);
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
