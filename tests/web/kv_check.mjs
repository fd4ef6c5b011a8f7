// Runs ops.js's rope_kv and attention under node against a Chain whose GPU calls are stubbed,
// for tests/test_web_js.py: which files each KV-cache dtype joins, and the errors. Reads a job
// (JSON) on stdin: {"static": "<dir of the modules>", "cases": [{"dtypes": [k, v], "features": [...]}]};
// writes [{"keys": [{"key", "sources"}], "error": {name, argument, feature} | null}] on stdout.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const job = JSON.parse(readFileSync(0, "utf8"));
const url = (name) => pathToFileURL(`${job.static}/${name}`).href;
const ops = await import(url("ops.js"));
const { Chain } = await import(url("chain.js"));
const { KernelKey } = await import(url("kernels.js"));
const { GpuTensor } = await import(url("tensor.js"));

async function run({ dtypes, features }) {
  const runtime = { caps: { features: new Set(features) } };
  const chain = new Chain(runtime, { source: null });
  const keys = [];
  chain.output = (shape, dtype = "float32") => new GpuTensor(runtime, {}, shape, dtype);
  chain.params = (words) => ({ words });
  chain.record = async (name, constants, buffers, workgroups, { family, files }) => {
    const key = new KernelKey(name, constants, { family, files });
    keys.push({ key: String(key), sources: key.sources });
  };
  const [k, v] = dtypes.map((dtype) => new GpuTensor(runtime, {}, [2, 128, 16], dtype));
  const state = {};
  try {
    const qkv = new GpuTensor(runtime, {}, [1, 8 * 16], "float32");
    const cosSin = new GpuTensor(runtime, {}, [128, 8, 2], "float32");
    const q = await ops.ropeKv(chain, qkv, cosSin, state, k, v, { qHeads: 4, kvHeads: 2, headDim: 16 });
    await ops.attention(chain, q, k, v, state, { kvHeads: 2, headDim: 16, splits: 2, splitKeys: 64 });
    return { keys, error: null };
  } catch (err) {
    return { keys, error: { name: err.name, argument: err.argument ?? null, feature: err.feature ?? null } };
  }
}

const out = [];
for (const c of job.cases) out.push(await run(c));
process.stdout.write(JSON.stringify(out));
