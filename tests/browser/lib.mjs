// Shared pieces of the browser tests: the running stack (started by run.sh
// through serve.py), its control API, and Debian's Chromium under
// playwright-core.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, afterEach, before } from 'node:test';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '..', '..');

const stateFile = process.env.TICKETS_BROWSER_STATE;
if (!stateFile) {
  throw new Error('TICKETS_BROWSER_STATE is not set: run tests/browser/run.sh');
}
export const stack = JSON.parse(fs.readFileSync(stateFile, 'utf8'));
export const BASE = stack.url;

// Where screenshots go: $TICKETS_SCREENSHOTS, else docs/screenshots.
export const SHOTS = path.resolve(ROOT, process.env.TICKETS_SCREENSHOTS || 'docs/screenshots');

export const CHROMIUM = process.env.TICKETS_CHROMIUM || '/usr/bin/chromium';

// One call to the control API of serve.py (SQL, tokens, database, locks).
export async function ctl(name, args = {}) {
  const r = await fetch(`${stack.control_url}/${name}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-Key': stack.control_key },
    body: JSON.stringify(args),
  });
  const body = await r.json();
  if (r.status !== 200) throw new Error(`control ${name}: ${body.error}`);
  return body.result;
}

export const sql = (query, args) => ctl('sql', { query, args });

// The free tickets of a user for an event, as the database has them.
export async function ticketRows(userId, eventId) {
  return sql('SELECT id, code FROM free_tickets WHERE user_id = %s AND event_id = %s',
    [userId, eventId]);
}

// Debian's Chromium, headless. playwright-core only drives it: no browser
// is downloaded. Each launch gets a fresh profile (--user-data-dir, made by
// playwright in $TMPDIR, which run.sh points at its own temp dir).
export async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
      '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync',
    ],
  });
}

export const DESKTOP = { viewport: { width: 1280, height: 800 } };
export const PHONE = {
  viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
};

// A fresh context (its own cookies and sessionStorage): no one signed in.
export async function newContext(browser, device = DESKTOP) {
  const context = await browser.newContext({ ...device, locale: 'en-GB', timezoneId: 'UTC' });
  context.setDefaultTimeout(15000);
  return context;
}

// One Chromium for the calling test file and a fresh context per call of
// the returned function; after each test its contexts are closed and the
// harness's invariants checked (no lock left, free_issued equal to the
// ticket rows, no app instance died). Call at the top level of a test file.
export function browserContexts() {
  let browser;
  const contexts = [];
  before(async () => {
    browser = await launch();
  });
  after(async () => {
    await browser?.close();
  });
  afterEach(async () => {
    while (contexts.length) await contexts.pop().close();
    assert.deepEqual(await ctl('check'), []);
  });
  return async (device) => {
    const context = await newContext(browser, device);
    contexts.push(context);
    return context;
  };
}

// A page of the context, failing the test on any script error, and on any
// console error except the expected "Failed to load resource" lines of
// refused API calls.
export async function openPage(context, url = BASE + '/') {
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) {
      problems.push('console error: ' + m.text());
    }
  });
  page.problems = problems;
  await page.goto(url);
  await ready(page);
  return page;
}

// The page has loaded its events and the user's tickets.
export async function ready(page) {
  await page.waitForFunction(() => document.documentElement.dataset.ready === 'true');
}

export function card(page, eventId) {
  return page.locator(`li.event[data-event-id="${eventId}"]`);
}

// Sign in as a demo user through the demo sign-in form.
export async function demoSignIn(page, userId) {
  await page.getByLabel('Demo user').selectOption(String(userId));
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText(/^Signed in as/).waitFor();
  await ready(page);
}

export function shot(name) {
  fs.mkdirSync(SHOTS, { recursive: true });
  return path.join(SHOTS, name);
}
