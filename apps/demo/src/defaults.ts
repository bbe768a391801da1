/** Defaults the CLI needs before it loads anything heavy (the server module pulls in fastify, dbx, testkit). */
export const DEFAULT_PORT = 8080;
export const DEFAULT_HOST = '127.0.0.1';
