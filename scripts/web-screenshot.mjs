// Screenshot of an export-web page in Debian's headless Chromium (WebGPU on SwiftShader), for
// docs/web-demo.png, docs/web-generate.png and docs/web-embeddings.png. A developer tool, not part of the tests:
//   q4gsw export-web /tmp/web --random 1024x1024                     # the layer demo, index.html
//   q4gsw export-web /tmp/web --model CHECKPOINT                      # a model, generate.html
//   q4gsw export-web /tmp/web --model minilm                          # embeddings.html?text=...&kernel=tiled
//   python -m http.server -b 127.0.0.1 -d /tmp/web 8765 &
//   NODE_PATH=<dir with playwright-core> node scripts/web-screenshot.mjs URL OUT.png [READY_REGEX]
// It waits until the page's text matches READY_REGEX (default: the layer demo's result).
import { createRequire } from "node:module";
const require = createRequire(import.meta.url);
const { chromium } = require("playwright-core");

const [url, out, ready = "GPU time|error"] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--enable-unsafe-webgpu", "--no-sandbox", "--disable-gpu-sandbox", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1000, height: 640 } });
page.on("console", (msg) => console.log(`page: ${msg.text()}`));
await page.goto(url);
await page.waitForFunction((pattern) => new RegExp(pattern, "i").test(document.body.innerText), ready, { timeout: 0 });
await page.screenshot({ path: out });
await browser.close();
