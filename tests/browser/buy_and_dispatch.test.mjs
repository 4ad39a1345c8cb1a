// End-to-end browser test of the widget store page served by the api service.
//
// Opens the page in Debian's Chromium (headless, via playwright-core), buys one
// widget, confirms the payment, and waits until the order's dispatch progress
// bar has been seen part-way (strictly between 0 and 10) and the order is
// DISPATCHED (status 1). Also checks the stock shown dropped by exactly one.
//
//   BASE_URL            default http://localhost:8080
//   CHROMIUM            default /usr/bin/chromium
//   STEP_TIMEOUT_MS     per step (page load, checkout, payment), default 30000
//   DISPATCH_TIMEOUT_MS wait for DISPATCHED after payment, default 40000
//
// Exit 0 on success; non-zero with a "FAIL:" message otherwise.

import { chromium } from "playwright-core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const BASE_URL = (process.env.BASE_URL || "http://localhost:8080").replace(/\/+$/, "");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const STEP_MS = Number(process.env.STEP_TIMEOUT_MS || 30000);
const DISPATCH_MS = Number(process.env.DISPATCH_TIMEOUT_MS || 40000);
const POLL_MS = 100;

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const logDir = path.join(repoRoot, ".local", "test-logs");
const shotOk = path.join(logDir, "browser-dispatched.png");
const shotFail = path.join(logDir, "browser-failure.png");

const t0 = Date.now();
const log = (...a) => console.log(`[browser +${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);
class TestFailure extends Error {}
const fail = (msg) => { throw new TestFailure(msg); };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Poll fn() (which returns a truthy value when done) until the deadline.
async function waitFor(what, ms, fn) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) fail(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(POLL_MS);
  }
}

// Everything the test reads from the DOM, in one round trip.
function snapshot(page, orderId) {
  return page.evaluate((oid) => {
    const q = (s) => document.querySelector(s);
    const row = oid != null ? q(`#orders tr[data-order-id="${CSS.escape(String(oid))}"]`) : null;
    const rowProg = row && row.querySelector("[data-progress]");
    const rowStatus = row && row.querySelector("[data-status]");
    const txt = (s) => (q(s) ? q(s).textContent.trim() : "");
    return {
      view: document.body.dataset.view || "",
      hash: location.hash,
      inventory: q("#product-inventory")?.dataset.inventory ?? "",
      storeMessage: txt("#store-message"),
      paymentMessage: txt("#payment-message"),
      orderMessage: txt("#order-message"),
      paymentId: txt("#payment-id"),
      orderStatus: q("#order-status")?.dataset.status ?? "",
      orderProgress: q("#order-progress")?.dataset.progress ?? "",
      orderProgressMax: String(q("#order-progress")?.max ?? ""),
      rowStatus: rowStatus ? rowStatus.dataset.status : null,
      rowProgress: rowProg ? rowProg.dataset.progress : null,
      rowProgressMax: rowProg ? String(rowProg.max) : null,
      bannerVisible: !!q("#connection-banner") && !q("#connection-banner").hidden,
    };
  }, orderId);
}

async function readInventory(page, what) {
  const s = await waitFor(what, STEP_MS, async () => {
    const s = await snapshot(page);
    return s.inventory !== "" && !Number.isNaN(Number(s.inventory)) ? s : null;
  });
  return Number(s.inventory);
}

async function main() {
  fs.mkdirSync(logDir, { recursive: true });
  for (const f of [shotOk, shotFail]) fs.rmSync(f, { force: true });
  if (!fs.existsSync(CHROMIUM)) fail(`Chromium not found at ${CHROMIUM} (apt-get install -y chromium)`);
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "widget-store-chromium-"));
  const consoleLines = [];
  let context, page;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"],
      viewport: { width: 1100, height: 900 },
    });
    page = context.pages()[0] || (await context.newPage());
    page.on("console", (m) => consoleLines.push(`console.${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => consoleLines.push(`pageerror: ${e.message}`));
    page.on("dialog", (d) => d.dismiss().catch(() => {}));

    // 1. Open the store and read the stock.
    log(`opening ${BASE_URL}/`);
    const resp = await page.goto(BASE_URL + "/", { waitUntil: "domcontentloaded", timeout: STEP_MS })
      .catch((e) => fail(`cannot open ${BASE_URL}/ (is the api service running?): ${e.message.split("\n")[0]}`));
    if (!resp || !resp.ok()) fail(`GET / returned ${resp ? resp.status() : "no response"}`);
    const ctype = resp.headers()["content-type"] || "";
    if (!ctype.startsWith("text/html")) fail(`GET / has Content-Type "${ctype}", expected text/html`);
    let before = await readInventory(page, "the product stock to load");
    log(`stock before: ${before}`);
    if (before <= 0) {
      log("out of stock: pressing Restock");
      await page.click("#restock");
      await waitFor("the restock to show", STEP_MS, async () => Number((await snapshot(page)).inventory) > 0);
      before = await readInventory(page, "the product stock after restock");
      log(`stock after restock: ${before}`);
    }

    // 2. Buy Now -> payment view.
    log("clicking Buy Now");
    await page.click("#buy-now");
    const paid = await waitFor("the payment view after Buy Now", STEP_MS, async () => {
      const s = await snapshot(page);
      if (s.view === "payment" && s.paymentId) return s;
      if (/could not/i.test(s.storeMessage)) fail(`checkout failed, page says: ${s.storeMessage}`);
      return null;
    });
    log(`payment view, payment id ${paid.paymentId}`);

    // 3. Confirm payment -> order view.
    log("clicking Confirm payment");
    await page.click("#confirm-payment");
    const onOrder = await waitFor("the order view after Confirm payment", STEP_MS, async () => {
      const s = await snapshot(page);
      if (s.view === "order") return s;
      if (/fail|could not/i.test(s.paymentMessage)) fail(`payment failed, page says: ${s.paymentMessage}`);
      return null;
    });
    const orderId = decodeURIComponent(onOrder.hash.replace(/^#order\//, ""));
    if (!orderId) fail(`order view has no order id in the URL (${onOrder.hash})`);
    log(`order view for order ${orderId}`);

    // 4. Watch the progress bar until DISPATCHED.
    let seenMid = false, lastKey = "";
    const seen = new Set();
    await waitFor(`order ${orderId} to be DISPATCHED with its progress bar seen part-way`, DISPATCH_MS, async () => {
      const s = await snapshot(page, orderId);
      const progs = [s.orderProgress, s.rowProgress].filter((v) => v !== null && v !== "").map(Number);
      for (const p of progs) { seen.add(p); if (p > 0 && p < 10) seenMid = true; }
      const key = `status=${s.orderStatus} row=${s.rowStatus} progress=${s.orderProgress}/${s.rowProgress}`;
      if (key !== lastKey) { log(key + (s.bannerVisible ? " (connection banner shown)" : "")); lastKey = key; }
      if (s.orderStatus === "-1" || s.rowStatus === "-1") fail(`order ${orderId} was CANCELLED`);
      if (s.orderMessage) log(`order view message: ${s.orderMessage}`);
      const dispatched = s.orderStatus === "1" && s.rowStatus === "1";
      if (dispatched && !seenMid)
        fail(`order ${orderId} reached DISPATCHED but the progress bar was never seen between 0 and 10 ` +
             `(values seen: ${[...seen].sort((a, b) => a - b).join(", ")})`);
      return dispatched && seenMid;
    });
    log(`order ${orderId} DISPATCHED; progress values seen: ${[...seen].sort((a, b) => a - b).join(", ")}`);
    const done = await snapshot(page, orderId);
    if (done.orderProgress !== "10" || done.rowProgress !== "10")
      fail(`DISPATCHED order shows progress ${done.orderProgress}/${done.rowProgress}, expected full (10)`);
    // The bars count the api's DISPATCH_STEPS (10 here), so full means full.
    if (done.orderProgressMax !== "10" || done.rowProgressMax !== "10")
      fail(`progress bars count ${done.orderProgressMax}/${done.rowProgressMax} steps, expected 10`);

    // 5. Reload and check the stock dropped by exactly one.
    await page.reload({ waitUntil: "domcontentloaded", timeout: STEP_MS });
    let after = await readInventory(page, "the product stock after reload");
    if (after !== before - 1) {
      // the read model may lag a moment behind; the page polls /product every second
      try {
        await waitFor(`stock to show ${before - 1}`, 5000, async () => Number((await snapshot(page)).inventory) === before - 1);
      } catch (e) {
        after = Number((await snapshot(page)).inventory);
        fail(`stock shown went from ${before} to ${after}, expected ${before - 1}`);
      }
      after = before - 1;
    }
    log(`stock after: ${after} (was ${before})`);

    // Bring the order into view for the screenshot.
    await page.waitForSelector(`#orders tr[data-order-id="${orderId}"] [data-status="1"]`, { timeout: STEP_MS });
    await page.screenshot({ path: shotOk, fullPage: true });
    log(`screenshot: ${path.relative(repoRoot, shotOk)}`);
    console.log(`PASS: bought one widget, paid, order ${orderId} dispatched, stock ${before} -> ${after}`);
  } catch (e) {
    if (page) await page.screenshot({ path: shotFail, fullPage: true }).catch(() => {});
    const msg = e instanceof TestFailure ? e.message : (e && e.stack) || String(e);
    console.error(`FAIL: ${msg}`);
    if (page) console.error(`  last DOM state: ${JSON.stringify(await snapshot(page).catch(() => null))}`);
    if (consoleLines.length) console.error("  browser console:\n    " + consoleLines.slice(-20).join("\n    "));
    console.error(`  failure screenshot: ${path.relative(repoRoot, shotFail)}`);
    process.exitCode = 1;
  } finally {
    if (context) await context.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
}

await main();
