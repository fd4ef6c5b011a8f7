// Runs wordpiece.js under node for tests/test_web_minilm.py: reads a job (JSON) on stdin,
// writes the ids and texts it makes on stdout (JSON).
//   {"static": "<dir of the modules>", "path": "<tokenizer.json>", "maxLength": 256,
//    "texts": [...], "decode": [[ids]]}
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const job = JSON.parse(readFileSync(0, "utf8"));
const { WordPieceTokenizer } = await import(pathToFileURL(`${job.static}/wordpiece.js`).href);
const tok = WordPieceTokenizer.fromJSON(JSON.parse(readFileSync(job.path, "utf8")), { maxLength: job.maxLength });
process.stdout.write(JSON.stringify({ encoded: job.texts.map((t) => tok.encode(t)), decoded: job.decode.map((ids) => tok.decode(ids)) }));
