// A bad token (garbage, expired, wrongly signed) is refused with a clear
// message and the token form; a good token pasted into the form then works.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mintToken, openBrowser, startGateway, withDiagnostics, T_LONG } from './helpers.mjs';

const SECRET = 'browser-test-secret-0123456789abcdef';

async function expectRefused(page, message) {
  await page.waitForSelector('#conn-state[data-state="auth-failed"]', { timeout: T_LONG });
  assert.match(await page.textContent('#conn-state'), /auth failed/);
  await page.waitForSelector('#auth-form', { state: 'visible', timeout: T_LONG });
  await page.waitForSelector('#auth-error', { state: 'visible', timeout: T_LONG });
  assert.equal((await page.textContent('#auth-error')).trim(), message);
  assert.equal(await page.textContent('#conn-detail'), message);
  // Nothing streamed, the token is forgotten, the field is ready for a new one.
  assert.equal(await page.locator('#quotes tbody tr').count(), 0);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('mt5.dashboard.token')), null);
  assert.equal(await page.inputValue('#token-input'), '');
  await page.waitForFunction(() => document.activeElement && document.activeElement.id === 'token-input', null, { timeout: T_LONG });
  assert.ok(!page.url().includes('token='), `token still in URL: ${page.url()}`);
}

async function withPage(t, name, body) {
  const gw = await startGateway({ secret: SECRET });
  t.after(() => gw.stop());
  const b = await openBrowser();
  t.after(() => b.close());
  await withDiagnostics(name, b.page, [gw], async () => {
    await body(gw, b.page);
    assert.deepEqual(b.problems, [], `console errors/warnings or page errors:\n${b.problems.join('\n')}`);
  });
}

test('no token in the URL: the form; a submitted token goes live and is kept for this tab', async (t) => {
  await withPage(t, 'auth-form', async (gw, page) => {
    await page.goto(`${gw.url}/`, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#auth-form', { state: 'visible', timeout: T_LONG });
    assert.equal(await page.getAttribute('#conn-state', 'data-state'), 'disconnected');
    assert.equal(await page.textContent('#conn-detail'), 'No token');
    assert.equal(await page.isVisible('#auth-error'), false, 'no error before anything was tried');
    await page.waitForFunction(() => document.activeElement && document.activeElement.id === 'token-input', null, { timeout: T_LONG });

    // Pasted with a "Bearer " prefix and a trailing newline: both are tolerated.
    const token = mintToken({ secret: SECRET, sub: 'form-only' });
    await page.fill('#token-input', `Bearer ${token}\n`);
    await page.click('#auth-form button[type="submit"]');
    await page.waitForSelector('#conn-state[data-state="live"]', { timeout: T_LONG });
    await page.waitForSelector('#auth', { state: 'hidden', timeout: T_LONG });
    await page.waitForSelector('#quotes tbody tr[data-symbol]', { timeout: T_LONG });
    assert.match(await page.textContent('#token-info'), /form-only/);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('mt5.dashboard.token')), token);
    assert.ok(!page.url().includes('token'), `token in URL: ${page.url()}`);

    // A reload in the same tab connects straight away with the kept token.
    await page.reload({ waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#conn-state[data-state="live"]', { timeout: T_LONG });
    assert.equal(await page.isVisible('#auth'), false);

    // "Change token" forgets it and shows the form again.
    await page.click('#logout-btn');
    await page.waitForSelector('#auth-form', { state: 'visible', timeout: T_LONG });
    assert.equal(await page.getAttribute('#conn-state', 'data-state'), 'disconnected');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('mt5.dashboard.token')), null);
  });
});

test('a garbage token: "Authentication failed: UNAUTHORIZED" and the token form', async (t) => {
  await withPage(t, 'auth-garbage', async (gw, page) => {
    await page.goto(`${gw.url}/#token=not-a-jwt`, { waitUntil: 'domcontentloaded' });
    await expectRefused(page, 'Authentication failed: UNAUTHORIZED');

    // The form takes a good token and the page goes live.
    await page.fill('#token-input', mintToken({ secret: SECRET, sub: 'form-user' }));
    await page.click('#auth-form button[type="submit"]');
    await page.waitForSelector('#conn-state[data-state="live"]', { timeout: T_LONG });
    await page.waitForSelector('#auth', { state: 'hidden', timeout: T_LONG });
    await page.waitForSelector('#quotes tbody tr[data-symbol]', { timeout: T_LONG });
    assert.match(await page.textContent('#token-info'), /form-user/);
    assert.equal(await page.textContent('#auth-error'), '');
  });
});

test('an expired token: "Token expired" and the token form', async (t) => {
  await withPage(t, 'auth-expired', async (gw, page) => {
    await page.clock.install();   // to jump ahead past every timer of the page below
    const expired = mintToken({ secret: SECRET, ttl: -60 });
    await page.goto(`${gw.url}/#token=${expired}`, { waitUntil: 'domcontentloaded' });
    await expectRefused(page, 'Token expired');

    // The refusal is final: a minute later no timer has retried or cleared it.
    await page.clock.fastForward(60_000);
    await page.evaluate(() => new Promise((r) => setTimeout(r, 50)));
    assert.equal(await page.getAttribute('#conn-state', 'data-state'), 'auth-failed');
    assert.equal(await page.textContent('#auth-error'), 'Token expired');
    assert.equal(await page.evaluate(() => window.__dashboard.state().attempt), 0);

    // An empty submit is stopped by the form (required field), without a connection attempt.
    await page.click('#auth-form button[type="submit"]');
    assert.equal(await page.$eval('#token-input', (el) => el.validity.valueMissing), true);
    assert.equal(await page.getAttribute('#conn-state', 'data-state'), 'auth-failed');
  });
});

test('a token signed with another secret: "Authentication failed: UNAUTHORIZED"', async (t) => {
  await withPage(t, 'auth-wrong-key', async (gw, page) => {
    const forged = mintToken({ secret: 'some-other-secret-0123456789abcdef' });
    await page.goto(`${gw.url}/#token=${forged}`, { waitUntil: 'domcontentloaded' });
    await expectRefused(page, 'Authentication failed: UNAUTHORIZED');
    // A reload does not retry the refused token (it was removed from session storage).
    await page.reload({ waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#auth-form', { state: 'visible', timeout: T_LONG });
    assert.equal(await page.getAttribute('#conn-state', 'data-state'), 'disconnected');
    assert.equal(await page.evaluate(() => window.__dashboard.state().connection), 'disconnected');
  });
});
