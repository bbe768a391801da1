/** What a pull asks for (`GET /sync/pull` query parameters; absent ones take the service's defaults). */
export interface PullParams {
  afterBundleSeq: number;
  maxBundles: number;
  targetBundleSeq: number;
}
