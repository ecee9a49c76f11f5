/**
 * A simulated alert feed, standing in for a GCN socket or an LVAlert/Kafka subscription: a stream
 * of packets of three types, with the source's own packet ids, until the signal aborts.
 */

/** The packet types this feed emits. Only the first two have handlers (see handlers.ts). */
export const PACKET_TYPES = ["FERMI_GBM_FIN_POS", "SWIFT_BAT_GRB_POS", "ICECUBE_ASTROTRACK_GOLD"] as const;

/** One packet as the feed delivers it. */
export interface FeedPacket {
  id: string;
  type: (typeof PACKET_TYPES)[number];
  payload: unknown;
}

/** Yields a packet every `intervalMs` (types in rotation, deterministic payloads) until `signal` aborts. */
export async function* alertFeed(signal: AbortSignal, intervalMs = 100): AsyncGenerator<FeedPacket> {
  for (let n = 1; !signal.aborted; n++) {
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, intervalMs);
      signal.addEventListener("abort", done, { once: true });
    });
    if (signal.aborted) return;
    const type = PACKET_TYPES[n % PACKET_TYPES.length]!;
    const id = `ivo://example/feed#${n}`;
    if (type === "FERMI_GBM_FIN_POS") yield { id, type, payload: `<voe:VOEvent ivorn="${id}"><Param name="Trig_ID" value="${n}"/></voe:VOEvent>` };
    else if (type === "SWIFT_BAT_GRB_POS") yield { id, type, payload: { trigger: n, ra: (n * 37) % 360, dec: ((n * 11) % 180) - 90 } };
    else yield { id, type, payload: { event: n, energyTeV: n / 10 } };
  }
}
