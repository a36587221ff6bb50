// The PHP example (examples/php/) under php-fpm behind the same nginx, in
// Debian's Chromium: the PHP site signs a token for its own logged-in user
// and calls tickets-fcgi server-side.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { BASE, ROOT, browserContexts, ctl, shot, stack, ticketRows } from './lib.mjs';

const freshContext = browserContexts();

async function phpPage() {
  const context = await freshContext();
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(e.message));
  page.problems = problems;
  const r = await page.goto(`${BASE}/php/`);
  assert.equal(r.status(), 200);
  assert.match(r.headers()['content-type'], /^text\/html/);
  return page;
}

async function signIn(page, userId) {
  await page.getByLabel('User id').fill(String(userId));
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText(`Signed in as user ${userId}.`).waitFor();
}

const article = (page, id) => page.locator(`article[data-event-id="${id}"]`);

test('PHP site: a signed-in member claims a ticket, server-side', async () => {
  await ctl('reset');
  const page = await phpPage();
  // no one signed in: the events, and no button
  await page.getByRole('heading', { name: 'Open rehearsal' }).waitFor();
  assert.equal(await page.getByRole('button', { name: /^Participate/ }).count(), 0);

  await signIn(page, 1);
  await page.getByRole('button', { name: 'Participate in Open rehearsal' }).click();
  const msg = article(page, 1).locator('.message');
  await msg.waitFor();
  assert.equal((await msg.textContent()).trim(), 'Your ticket is ready. Show this code at the entrance.');
  assert.equal(await msg.getAttribute('role'), 'status');
  const code = (await article(page, 1).locator('.code').textContent()).trim();
  assert.match(code, /^[0-9a-f]{32}$/);
  assert.deepEqual((await ticketRows(1, 1)).map((r) => r[1]), [code]);

  // Post/Redirect/Get: a reload shows the ticket again and sends nothing
  await page.reload();
  assert.equal((await article(page, 1).locator('.code').textContent()).trim(), code);
  assert.equal(await article(page, 1).locator('.message').count(), 0);

  // the same form sent again (a double click, another tab): the same ticket
  const again = await page.evaluate(async () => {
    const form = new FormData();
    form.set('csrf', document.querySelector('input[name=csrf]').value);
    form.set('action', 'participate');
    form.set('event_id', '1');
    const r = await fetch(location.pathname, { method: 'POST', body: form });
    return { status: r.status, text: await r.text() };
  });
  assert.equal(again.status, 200);   // after the 303
  assert.match(again.text, /You already have a ticket for this event\./);
  assert.equal((await ticketRows(1, 1)).length, 1);
  await page.screenshot({ path: shot('php-example.png'), fullPage: true });
  assert.deepEqual(page.problems, []);
});

test('PHP site: refusals in words', async () => {
  await ctl('reset');
  const cases = [
    [4, 1, 'Open rehearsal',
      'Free tickets are for premium members, and your premium membership is not active.'],
    [2, 2, 'Jazz in the park',
      'You already have an order for this event, so it has no free ticket for you.'],
    [1, 6, 'Sold-out preview', 'Sold out: all free tickets for this event have been taken.'],
  ];
  for (const [user, event, title, text] of cases) {
    const page = await phpPage();
    await signIn(page, user);
    await page.getByRole('button', { name: `Participate in ${title}` }).click();
    const msg = article(page, event).locator('.message');
    await msg.waitFor();
    assert.equal((await msg.textContent()).trim(), text, `user ${user}, event ${event}`);
    assert.match(await msg.getAttribute('class'), /\bbad\b/);
    assert.equal((await ticketRows(user, event)).length, 0);
  }
});

test('PHP client: its tokens are HS256 with the shared secret, nothing else passes', async () => {
  await ctl('reset');
  const lib = path.join(ROOT, 'examples', 'php', 'tickets.php');
  const php = (code) => execFileSync('php', ['-r', `require '${lib}'; ${code}`], {
    // the secret file of the stack, read the way the PHP site reads it
    env: { ...process.env, TICKETS_JWT_SECRET_FILE: path.join(stack.dir, 'jwt-secret') },
    encoding: 'utf8',
  });
  const good = php('echo tickets_token(1);');
  const bad = php('echo tickets_token(1, "not the secret");');
  const [h, p] = good.split('.');
  assert.deepEqual(JSON.parse(Buffer.from(h, 'base64url')), { alg: 'HS256', typ: 'JWT' });
  const payload = JSON.parse(Buffer.from(p, 'base64url'));
  assert.equal(payload.sub, '1');
  assert.ok(payload.exp - Math.floor(Date.now() / 1000) <= 60);
  const lookup = (t) => fetch(`${BASE}/api/events/1/participation`, { headers: { Authorization: 'Bearer ' + t } });
  assert.equal((await lookup(good)).status, 404);   // accepted: no ticket yet
  assert.equal((await lookup(bad)).status, 401);
});
