// Screenshot of the export-web demo page in Debian's headless Chromium (WebGPU on
// SwiftShader), for docs/web-demo.png. A developer tool, not part of the tests:
//   q4gsw export-web /tmp/web --random 1024x1024
//   python -m http.server -b 127.0.0.1 -d /tmp/web 8765 &
//   NODE_PATH=<dir with playwright-core> node scripts/web-screenshot.mjs http://127.0.0.1:8765/ docs/web-demo.png
import { createRequire } from "node:module";
const require = createRequire(import.meta.url);
const { chromium } = require("playwright-core");

const [url, out] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--enable-unsafe-webgpu", "--no-sandbox", "--disable-gpu-sandbox", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1000, height: 560 } });
await page.goto(url);
await page.waitForFunction(() => /GPU time|error/i.test(document.body.innerText), null, { timeout: 120000 });
await page.screenshot({ path: out });
await browser.close();
