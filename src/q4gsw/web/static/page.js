// page.js: what the demo pages (generate.html, embeddings.html) share: their query, element
// lookup, the POSTs a test harness reads (?report=, ?progress=), and the loading bar a
// bundle's onProgress drives. Not part of the q4gsw.js API.

export const params = new URLSearchParams(location.search);
export const $ = (id) => document.getElementById(id);
export const post = (path, body) => fetch(path, { method: "POST", body: JSON.stringify(body) }).catch(() => {});
/** POST {step: what} to ?progress= when the page was given one. */
export const step = (what) => { if (params.get("progress")) return post(params.get("progress"), { step: what }); };

/** An onProgress callback for loadModel / loadSentenceEncoder that drives the #bar and #status
 * elements and reports each new file and the start of compilation through step(). */
export function showLoadProgress() {
  let lastFile = null;
  return (p) => {
    if (p.phase === "compile") { $("status").textContent = "compiling the kernels…"; step("fetched"); return; }
    $("bar").max = p.total || 1;
    $("bar").value = p.loaded;
    $("status").textContent = `${(p.loaded / 2 ** 20).toFixed(1)} of ${(p.total / 2 ** 20).toFixed(1)} MiB`
      + ` (${p.filesDone} of ${p.files} files${p.fromCache ? ", from the cache" : ""})`;
    if (p.file !== lastFile) { lastFile = p.file; step(`file ${p.file}`); }
  };
}
