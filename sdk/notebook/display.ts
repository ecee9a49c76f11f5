/**
 * Where the helpers show things: tslab's display in a notebook, plain text anywhere else. tslab is
 * never imported at load time, so these helpers work in scripts and tests without it.
 */

/** A display surface with tslab's shape (`tslab.display`, or one made by `tslab.newDisplay()`). */
export interface Display {
  html(html: string): void;
}

/** What {@link useDisplay} and the `display` options take: the `tslab` module, or anything shaped like it. */
export interface DisplayHost {
  display: Display;
  /** A display that overwrites its own output on each call (live progress). */
  newDisplay?: () => Display;
}

/** Options every displaying helper takes. */
export interface ShowOptions {
  /** Where to display; default: the host given to {@link useDisplay}, else `tslab` if it can be imported, else text. */
  display?: DisplayHost;
  /** Where text goes when there is no notebook; default console.log. */
  log?: (line: string) => void;
}

let preferred: DisplayHost | undefined;

/**
 * Sets where helpers display by default. In a tslab notebook: `import * as tslab from "tslab";
 * useDisplay(tslab);` (tslab gives cells its module, but a library loaded from dist/ cannot import it).
 */
export function useDisplay(host: DisplayHost | undefined): void {
  preferred = host;
}

/** A display resolved for one helper call: `show` falls back to text when HTML cannot be shown. */
export interface Surface {
  /** Shows `html`, or `text` when there is no notebook. */
  show(html: string, text: string): void;
  /** True when output goes to a notebook. */
  readonly rich: boolean;
}

async function importTslab(): Promise<DisplayHost | undefined> {
  // A variable specifier keeps bundlers and type checkers from resolving tslab, an optional peer.
  const name = "tslab";
  try {
    const mod = (await import(name)) as Partial<DisplayHost> & { default?: Partial<DisplayHost> };
    const host = mod.display ? mod : mod.default;
    return host?.display ? (host as DisplayHost) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Resolves where one helper call displays. With `live`, a tslab host gives a display that
 * overwrites itself, so a progress bar updates in place.
 */
export async function surface(options: ShowOptions = {}, live = false): Promise<Surface> {
  const log = options.log ?? ((line: string) => console.log(line));
  const host = options.display ?? preferred ?? (await importTslab());
  const text: Surface = { rich: false, show: (_html, t) => log(t) };
  if (!host) return text;
  const target = live && host.newDisplay ? host.newDisplay() : host.display;
  let rich = true;
  return {
    get rich() {
      return rich;
    },
    show(html, t) {
      if (!rich) return log(t);
      try {
        target.html(html);
      } catch {
        // tslab's display outside a running kernel throws ("Not ready"): this is a terminal.
        rich = false;
        log(t);
      }
    },
  };
}
