/** Pure text helpers (no JupyterLab): unit-tested in js/test. */

/** A short content hash (FNV-1a, 32 bit): the "revision" the agent must quote to write a cell. */
export function revisionOf(cellType: string, source: string): string {
  const text = cellType + '\u0000' + source;
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash.toString(16).padStart(8, '0');
}

/** Format (bidi controls, zero-width) and control characters as visible markers, e.g. ⟦U+202E⟧. */
export function visible(text: string): string {
  return text.replace(/[\p{Cf}\p{Cc}\p{Zl}\p{Zp}]/gu, ch =>
    ch === '\n' || ch === '\t' ? ch : `⟦U+${ch.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}⟧`
  );
}
