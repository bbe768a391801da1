/** The registered tables' foreign-key order, found by `bootstrap()` (`SyncService.discoveredSchema`). */
export interface DiscoveredSchema {
  /** `schema.table`, parents first, members of a cycle together in sorted order. */
  readonly tableOrder: readonly string[];
  readonly orderIdx: ReadonlyMap<string, number>;
  readonly dependencies: ReadonlyMap<string, readonly string[]>;
  /** `schema.table` → cycle id (> 0 only for members of a multi-table cycle). */
  readonly cycleGroup: ReadonlyMap<string, number>;
  readonly cycles: ReadonlyMap<number, readonly string[]>;
}
