// hub's dashboard in a real headless Chromium, driven by playwright-core. Run by the ignored Rust
// test `dashboard::the_dashboard_works_in_a_real_browser` (tests/it/dashboard.rs), which starts
// the daemons and passes:
//   HUB_URL, HUB_CONFIG           a daemon with built-in workers (alpha pinned in tier_one, which
//                                 holds one; beta in tier_one; gamma stopped; delta running)
//   HUB_TOKEN_URL, HUB_TOKEN      another one, started with HUB_TOKEN
//   HUB_TEST_NODE_MODULES         where playwright-core is (scripts/test-real installs it)
//   HUB_TEST_CHROMIUM             Debian's chromium (playwright's own download is not used)
//   HUB_TEST_SCREENSHOTS          where screenshots go
// What only the Rust side can do (kill the daemon, restart it) is asked for with a line
// `hub-test: <request>` on stdout; the answer `ok` comes on stdin.

import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";

const env = name => {
  const value = process.env[name];
  if (!value) throw new Error(name + " is not set: run this from tests/it/dashboard.rs");
  return value;
};
const require = createRequire(path.join(env("HUB_TEST_NODE_MODULES"), "package.json"));
const { chromium } = require("playwright-core");

const URL = env("HUB_URL");
const CONFIG = env("HUB_CONFIG");
const TOKEN_URL = env("HUB_TOKEN_URL");
const TOKEN = env("HUB_TOKEN");
const SHOTS = env("HUB_TEST_SCREENSHOTS");
const MODELS = ["alpha", "beta", "gamma", "delta"];

// ---- talking to the Rust side ----
const input = readline.createInterface({ input: process.stdin });
const answers = [];
let waiting = null;
input.on("line", line => { if (waiting) { const w = waiting; waiting = null; w(line); } else answers.push(line); });
function ask(request) {
  console.log("hub-test: " + request);
  return new Promise(resolve => {
    if (answers.length) resolve(answers.shift()); else waiting = resolve;
  });
}

// ---- helpers ----
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));
async function until(what, check, timeout = 15000) {
  const started = Date.now();
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) { last = e; }
    if (Date.now() - started > timeout) throw new Error("timed out waiting for " + what + " (last: " + last + ")");
    await sleep(50);
  }
}
function assert(ok, message) { if (!ok) throw new Error("assertion failed: " + message); }
async function status(base = URL) {
  const answer = await fetch(base + "/hub/status", { cache: "no-store" });
  return answer.json();
}
async function model(name) { return (await status()).models.find(m => m.name === name); }
function save(text) {
  // As editors save: a temp file beside it, renamed over it.
  const temp = path.join(path.dirname(CONFIG), ".hub.yaml.tmp");
  fs.writeFileSync(temp, text);
  fs.renameSync(temp, CONFIG);
}
const cell = (page, name, label) => page.locator(`tr[data-model="${name}"] td[data-label="${label}"]`);
async function toast(page, text) {
  const t = page.locator(".toast", { hasText: text });
  await t.first().waitFor({ timeout: 15000 });
  return t.first().textContent();
}
async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, name + ".png"), fullPage: true });
}
async function live(page) {
  await until("the page to be live", async () => (await page.locator("#conn").textContent()) === "live");
}

// Every text's contrast against its background: WCAG AA (4.5:1; 3:1 for large text).
async function contrast(page, where) {
  const failures = await page.evaluate(() => {
    const parse = c => { const m = c.match(/[\d.]+/g).map(Number); return { r: m[0], g: m[1], b: m[2], a: m.length > 3 ? m[3] : 1 }; };
    const lum = c => {
      const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
      return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
    };
    const background = el => {
      for (let e = el; e; e = e.parentElement) {
        const c = parse(getComputedStyle(e).backgroundColor);
        if (c.a > 0.5) return c;
      }
      return { r: 255, g: 255, b: 255, a: 1 };
    };
    const out = [];
    for (const el of document.querySelectorAll("body *")) {
      if (el.closest("[hidden]") || el.closest("script, style") || el.disabled) continue;
      const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
      if (!own || !el.getClientRects().length) continue;
      const style = getComputedStyle(el);
      const fg = parse(style.color), bg = background(el);
      const [l1, l2] = [lum(fg), lum(bg)].sort((a, b) => b - a);
      const ratio = (l1 + 0.05) / (l2 + 0.05);
      const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
      const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
      if (ratio < need) out.push(el.tagName + " " + JSON.stringify(el.textContent.trim().slice(0, 40)) + ": " + ratio.toFixed(2));
    }
    return out;
  });
  assert(failures.length === 0, "text contrast below WCAG AA " + where + ":\n  " + failures.join("\n  "));
}

const results = [];
async function scenario(name, body) {
  const started = Date.now();
  try {
    await body();
    results.push("ok   " + name + " (" + (Date.now() - started) + " ms)");
    console.log("ok   " + name);
  } catch (e) {
    results.push("FAIL " + name + ": " + e.message);
    console.log("FAIL " + name + ": " + (e.stack || e));
  }
}

const browser = await chromium.launch({ executablePath: env("HUB_TEST_CHROMIUM"), args: ["--no-sandbox"] });
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on("pageerror", e => console.log("page error: " + e.message));
  await page.goto(URL + "/hub");
  await live(page);
  await page.evaluate(() => { window.notReloaded = true; });

  await scenario("the page shows every model, with a named button for each action", async () => {
    const s = await status();
    for (const m of s.models) {
      await until(m.name + "'s row", async () => (await cell(page, m.name, "phase").textContent()) === m.worker.phase);
      assert((await cell(page, m.name, "pid").textContent()) === (m.worker.pid ? String(m.worker.pid) : "-"), m.name + "'s pid");
      for (const verb of ["Start", "Stop", "Load", "Unload"]) {
        assert(await page.getByRole("button", { name: verb + " " + m.name, exact: true }).isEnabled(), verb + " " + m.name);
      }
    }
    assert((await page.locator("tbody tr").count()) === MODELS.length, "one row per model");
    assert((await page.locator("#groups").textContent()).includes("tier_one: 1 of 1 loaded"), "the group");
    assert((await page.locator("#report").textContent()).includes("started"), "the last reconcile");
    const wide = await page.evaluate(() =>
      document.querySelector("table").scrollWidth - document.querySelector(".table-wrap").clientWidth);
    assert(wide <= 0, "the table fits 1280 px: " + wide + " px too wide");
    await contrast(page, "at 1280 px");
    await shot(page, "dashboard");
  });

  await scenario("Stop stops the worker, disables the button while it runs, and the row updates live", async () => {
    const pid = (await model("delta")).worker.pid;
    assert(pid, "delta runs");
    // Hold the request a moment, so the disabled button can be seen.
    await page.route("**/hub/models/delta/stop", async route => { await sleep(400); await route.continue(); });
    const stop = page.getByRole("button", { name: "Stop delta", exact: true });
    await stop.click();
    assert(await stop.isDisabled(), "the button is disabled while its action runs");
    assert((await toast(page, "Stop delta")).includes("done"), "a toast reports the result");
    await page.unroute("**/hub/models/delta/stop");
    await until("delta's pid gone from /hub/status", async () => (await model("delta")).worker.pid === null);
    await until("delta's row to show it stopped", async () =>
      (await cell(page, "delta", "phase").textContent()) === "stopped" &&
      (await cell(page, "delta", "pid").textContent()) === "-");
    assert((await cell(page, "delta", "override").textContent()).startsWith("stopped"), "the override shows");
    assert(await stop.isEnabled(), "the button is enabled again");
    assert(await page.evaluate(() => window.notReloaded), "without a reload");
  });

  await scenario("Load into a full group with a pinned member shows the 429 message", async () => {
    const answer = await fetch(URL + "/hub/models/beta/load", { method: "POST", headers: { "X-Hub-Client": "test" } });
    assert(answer.status === 429, "the API says 429");
    const message = (await answer.json()).error.message;
    await page.getByRole("button", { name: "Load beta", exact: true }).click();
    const text = await toast(page, "Load beta failed");
    assert(text.includes("429: " + message), "the toast has the envelope's message: " + text);
    assert(await page.locator(".toast.error[role=alert]", { hasText: "Load beta" }).count() > 0, "an error toast is an alert");
  });

  await scenario("the drawer shows a model's events and follows its log, by keyboard", async () => {
    await page.getByRole("button", { name: "Details of delta" }).focus();
    await page.keyboard.press("Enter");
    await page.locator("#drawer").waitFor();
    assert(await page.evaluate(() => document.activeElement.id === "drawer-close"), "focus moves into the drawer");
    await until("delta's events", async () => (await page.locator("#events li").count()) > 0);
    const before = (await page.locator("#log").textContent()).length;
    const events = await page.locator("#events li").count();
    const answer = await fetch(URL + "/hub/models/delta/start", { method: "POST", headers: { "X-Hub-Client": "test" } });
    assert(answer.status === 202, "delta starts");
    await until("the new log lines", async () => (await page.locator("#log").textContent()).length > before);
    await until("the new events", async () => (await page.locator("#events li").count()) > events);
    await shot(page, "drawer");
    await page.keyboard.press("Escape");
    assert(await page.locator("#drawer").isHidden(), "Escape closes the drawer");
    assert(await page.evaluate(() => document.activeElement.getAttribute("aria-label") === "Details of delta"),
      "focus returns to the row");
  });

  await scenario("Reload reads hub.yaml again and says so", async () => {
    const button = page.getByRole("button", { name: "Reload hub.yaml" });
    await page.route("**/hub/reload", async route => { await sleep(300); await route.continue(); });
    await button.click();
    assert(await button.isDisabled(), "the button is disabled while it runs");
    await toast(page, "Reload: hub.yaml read again");
    await page.unroute("**/hub/reload");
    await until("Reload enabled again", () => button.isEnabled());
  });

  const good = fs.readFileSync(CONFIG, "utf8");
  await scenario("a broken save shows the banner with its lines within a second; a good save removes it", async () => {
    const lines = good.split("\n");
    const beta = lines.findIndex(l => l.includes("name: beta"));
    const delta = lines.findIndex(l => l.includes("name: delta"));
    lines[beta] = lines[beta].replace("state: running", "state: dancing");
    lines[delta] = lines[delta].replace("state: running", "state: sleeping");
    let started = Date.now();
    save(lines.join("\n"));
    const banner = page.getByRole("alert").filter({ hasText: "rejected" });
    await banner.waitFor({ timeout: 5000 });
    const shown = Date.now() - started;
    console.log("the banner showed " + shown + " ms after the save");
    assert(shown <= 1000, "the banner showed within a second, not " + shown + " ms");
    const items = await page.locator("#rejected li").allTextContents();
    const rejected = (await status()).config.rejected;
    assert(items.length === rejected.errors.length && items.length >= 2, "every problem: " + items);
    assert(items.some(i => i.startsWith((beta + 1) + ":") && i.includes("models[1].state")), "beta's line " + (beta + 1) + ": " + items);
    assert(items.some(i => i.startsWith((delta + 1) + ":") && i.includes("models[3].state")), "delta's line " + (delta + 1) + ": " + items);
    for (const e of rejected.errors) {
      assert(items.includes(e.line + ":" + e.column + " " + e.path + ": " + e.message), "line:column path: message of " + e.path);
    }
    assert((await page.locator("#summary").textContent()).includes("running an older hub.yaml"), "the summary says so");
    await contrast(page, "with the banner");
    await shot(page, "rejected");

    started = Date.now();
    save(good);
    await banner.waitFor({ state: "hidden", timeout: 5000 });
    const gone = Date.now() - started;
    console.log("the banner went " + gone + " ms after the good save");
    assert(gone <= 1000, "the banner went within a second, not " + gone + " ms");
    assert(!(await page.locator("#summary").textContent()).includes("older"), "the summary is current");
  });

  await scenario("killing the daemon shows the disconnected state; a restart recovers", async () => {
    await ask("kill");
    await page.locator("#offline").waitFor({ timeout: 10000 });
    assert((await page.locator("#offline").textContent()).startsWith("Disconnected since"), "says since when");
    assert(await page.locator("#main.stale").count() === 1, "the stale data is greyed");
    assert((await page.locator("#conn").textContent()) === "disconnected", "the badge");
    assert(await page.getByRole("button", { name: "Stop alpha", exact: true }).isDisabled(), "no writes meanwhile");
    await contrast(page, "disconnected");
    await shot(page, "disconnected");
    await ask("restart");
    await until("the page to be live again", async () => (await page.locator("#conn").textContent()) === "live", 30000);
    assert(await page.locator("#offline").isHidden(), "the notice is gone");
    assert(await page.locator("#main.stale").count() === 0, "not greyed");
    const s = await status();
    for (const m of s.models) {
      await until(m.name + "'s pid after the restart", async () =>
        (await cell(page, m.name, "pid").textContent()) === (m.worker.pid ? String(m.worker.pid) : "-"));
    }
    assert(await page.getByRole("button", { name: "Stop alpha", exact: true }).isEnabled(), "writes again");
    assert(await page.evaluate(() => window.notReloaded), "without a reload");
  });

  await scenario("on a phone the page fits the screen", async () => {
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    const small = await phone.newPage();
    await small.goto(URL + "/hub");
    await live(small);
    await until("rows", async () => (await small.locator("tbody tr").count()) === MODELS.length);
    const overflow = await small.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert(overflow <= 0, "no sideways scrolling: " + overflow + " px too wide");
    await contrast(small, "on a phone");
    await shot(small, "phone");
    await phone.close();
  });

  await scenario("with HUB_TOKEN, a write asks for the token once and keeps it for the tab", async () => {
    const guarded = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const tab = await guarded.newPage();
    await tab.goto(TOKEN_URL + "/hub");
    await live(tab);
    await until("rows", async () => (await tab.locator("tbody tr").count()) === MODELS.length);
    await tab.getByRole("button", { name: "Stop beta", exact: true }).click();
    const dialog = tab.locator("#token-dialog");
    await dialog.waitFor();
    await shot(tab, "token");
    await tab.getByRole("textbox", { name: "Token" }).fill(TOKEN);
    await tab.getByRole("button", { name: "Use token" }).click();
    assert((await toast(tab, "Stop beta")).includes("done"), "the write went through with the token");
    await until("beta stopped", async () =>
      (await status(TOKEN_URL)).models.find(m => m.name === "beta").worker.pid === null);
    assert(await tab.evaluate(() => sessionStorage.getItem("hub-token")) === TOKEN, "kept in sessionStorage");
    assert(!tab.url().includes(TOKEN), "never in the address");
    await tab.getByRole("button", { name: "Start beta", exact: true }).click();
    assert((await toast(tab, "Start beta")).includes("done"), "the second write uses the kept token");
    assert(await dialog.isHidden(), "asked only once");
    await guarded.close();
  });
} finally {
  await browser.close();
  input.close();
}

console.log("\n" + results.join("\n"));
process.exit(results.every(r => r.startsWith("ok")) ? 0 : 1);
