/** @x/testkit: not implemented yet. */
export const VERSION = '0.1.0';
