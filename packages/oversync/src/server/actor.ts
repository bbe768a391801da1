/** Who a sync operation acts for: the authenticated user and the device's sync source. */
export interface Actor {
  readonly userId: string;
  readonly sourceId: string;
}
