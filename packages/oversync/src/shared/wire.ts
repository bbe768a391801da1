/**
 * go-oversync protocol v1 wire shapes (JSON over HTTP), shared by the server and the client: the
 * protocol's constants and error codes (wire-protocol.ts), requests (wire-requests.ts) and
 * responses (wire-responses.ts). Both sides import them from here.
 */
export * from './wire-protocol.js';
export * from './wire-requests.js';
export * from './wire-responses.js';
