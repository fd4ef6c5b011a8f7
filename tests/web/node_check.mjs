// Runs q4gsw.js's pure modules under node for tests/test_web_js.py: reads a job (JSON) on stdin,
// writes what kernels.js (routing) and tokenizer.js make of it on stdout (JSON).
//   {"static": "<dir of the modules>", "routing": [{"costs", "caps", "broken", "activations", "problems": [[m, n, k, gs, bias]]}],
//    "tokenizers": [{"path", "texts": [...], "decode": [[ids]]}]}
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const job = JSON.parse(readFileSync(0, "utf8"));
const url = (name) => pathToFileURL(`${job.static}/${name}`).href;
const { Router, problem } = await import(url("kernels.js"));
const { Tokenizer } = await import(url("tokenizer.js"));

function route({ costs, caps, broken = {}, problems, activations = "f32" }) {
  const router = new Router(costs, caps, new Map(Object.entries(broken)));
  return problems.map(([m, n, k, gs, bias]) => {
    const p = problem(m, n, k, gs, bias);
    const specs = {};
    for (const spec of router.registry(activations)) {
      const reason = spec.supports(p, caps);
      const entry = { reason };
      if (reason === null) {
        const split = spec.split(p);
        Object.assign(entry, { key: String(spec.key(p)), tiles: spec.tiles(p), split, predicted: spec.predictedSeconds(p),
          reduce: split > 1 ? String(spec.reduceKey(p)) : null, invocations: spec.invocations(p) });
      }
      specs[spec.name] = entry;
    }
    let select;
    try {
      const { spec, fallbacks } = router.select(p, null, activations);
      select = { kernel: spec.name, fallbacks };
    } catch (err) {
      select = { error: `${err.name}: ${err.message}` };
    }
    return { specs, select };
  });
}

function tokenize({ path, texts, decode }) {
  const tok = Tokenizer.fromJSON(JSON.parse(readFileSync(path, "utf8")));
  return { encoded: texts.map((t) => tok.encode(t)), decoded: decode.map((ids) => tok.decode(ids)) };
}

process.stdout.write(JSON.stringify({ routing: (job.routing || []).map(route), tokenizers: (job.tokenizers || []).map(tokenize) }));
