/** Header copying shared by the worker and its scheduler (dead letters, retries, moved tasks). */
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/nats-core";

/** A new header set with every value of `src` (headers may repeat). */
export function copyHeaders(src: MsgHdrs | undefined): MsgHdrs {
  const h = natsHeaders();
  if (src) for (const [k, values] of src) for (const v of values) h.append(k, v);
  return h;
}
