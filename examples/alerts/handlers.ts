/**
 * The handlers of the alerts example, declared as GWCelery declares `@gcn.handler(...)`: each
 * becomes its own task (`handlers.gcn.<name>`), registered on a worker with `handlers.register()`.
 * ICECUBE_ASTROTRACK_GOLD has no handler: those packets are counted, not errors.
 */
import * as v from "valibot";
import { HandlerRegistry } from "../../sdk/worker/handlers.ts";

/** What each handler received, for the example's report (the worker runs in this process). */
export const received: Record<string, string[]> = { handleFermi: [], handleSwift: [] };

export const handlers = new HandlerRegistry();

handlers.handler("gcn", ["FERMI_GBM_FIN_POS", "FERMI_GBM_GND_POS"], function handleFermi(payload: unknown, ctx) {
  const trigger = /Trig_ID" value="(\d+)"/.exec(String(payload))?.[1];
  received.handleFermi!.push(`${ctx.packet.type} trigger ${trigger}`);
});

handlers.handler("gcn", "SWIFT_BAT_GRB_POS", function handleSwift(payload, ctx) {
  received.handleSwift!.push(`${ctx.packet.type} trigger ${payload.trigger} at ra ${payload.ra}, dec ${payload.dec}`);
}, { payload: v.object({ trigger: v.number(), ra: v.number(), dec: v.number() }), retries: 2 });
