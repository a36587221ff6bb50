<?php
/*
 * A legacy PHP site's "free tickets" page, calling tickets-fcgi server-side.
 *
 * The site knows who is logged in ($_SESSION['user_id'], set by its own
 * login); for each call it signs a one-minute token for that user with the
 * secret it shares with tickets-fcgi (tickets.php). The browser never sees a
 * token or the API.
 *
 * TICKETS_EXAMPLE_DEMO_LOGIN=1 (the browser tests set it in the php-fpm pool)
 * adds a stand-in login that takes any user id, without a password: never
 * set it on a real site, use the site's own login instead.
 */

declare(strict_types=1);

require __DIR__ . '/tickets.php';

session_start([
    'cookie_httponly' => true,
    'cookie_samesite' => 'Lax',
    'use_strict_mode' => true,
]);

function h($s): string
{
    return htmlspecialchars((string) $s, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8');
}

$self = strtok($_SERVER['REQUEST_URI'] ?? '/', '?');
$demoLogin = getenv('TICKETS_EXAMPLE_DEMO_LOGIN') === '1';
if (empty($_SESSION['csrf'])) {
    $_SESSION['csrf'] = bin2hex(random_bytes(16));
}

if (($_SERVER['REQUEST_METHOD'] ?? 'GET') === 'POST') {
    if (!hash_equals($_SESSION['csrf'], (string) ($_POST['csrf'] ?? ''))) {
        http_response_code(400);
        exit('The form expired. Go back and reload the page.');
    }
    $action = (string) ($_POST['action'] ?? '');
    $userId = isset($_SESSION['user_id']) ? (int) $_SESSION['user_id'] : null;
    if ($action === 'login' && $demoLogin) {
        $id = filter_var($_POST['user_id'] ?? '', FILTER_VALIDATE_INT, ['options' => ['min_range' => 1]]);
        if ($id !== false) {
            session_regenerate_id(true);
            $_SESSION['user_id'] = $id;
            $_SESSION['flash'] = [];
        }
    } elseif ($action === 'logout') {
        $_SESSION = ['csrf' => bin2hex(random_bytes(16))];
        session_regenerate_id(true);
    } elseif ($action === 'participate' && $userId !== null) {
        $eventId = filter_var($_POST['event_id'] ?? '', FILTER_VALIDATE_INT, ['options' => ['min_range' => 1]]);
        if ($eventId !== false) {
            $r = tickets_claim($userId, $eventId);
            $_SESSION['flash'][$eventId] = $r['ticket'] !== null
                ? ['ok', $r['created'] ? 'Your ticket is ready. Show this code at the entrance.'
                                       : 'You already have a ticket for this event.']
                : ['bad', tickets_message($r)];
        }
    }
    // Post/Redirect/Get: a reload does not send the form again.
    header('Location: ' . $self, true, 303);
    exit;
}

$userId = isset($_SESSION['user_id']) ? (int) $_SESSION['user_id'] : null;
$flash = $_SESSION['flash'] ?? [];
$_SESSION['flash'] = [];
$events = tickets_events();
?>
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Example site: free tickets</title>
<style>
  body { font-family: system-ui, "DejaVu Sans", sans-serif; line-height: 1.5; color: #1a1a1a;
         background: #fafafa; margin: 0; }
  main { max-width: 48rem; margin: 0 auto; padding: 1rem; }
  h1 { font-size: 1.5rem; }
  .box { background: #fff; border: 1px solid #d1d5db; border-radius: .5rem; padding: 1rem; margin: 0 0 1rem; }
  .event h2 { font-size: 1.125rem; margin: 0 0 .25rem; }
  .muted { color: #4b5563; margin: 0 0 .5rem; }
  button { font: inherit; font-weight: 600; min-height: 2.75rem; padding: .4rem 1rem; color: #fff;
           background: #1d4ed8; border: 2px solid #1d4ed8; border-radius: .375rem; cursor: pointer; }
  button.secondary { color: #1e3a8a; background: #fff; }
  input { font: inherit; min-height: 2.75rem; padding: .25rem .5rem; border: 2px solid #4b5563; border-radius: .375rem; }
  :focus-visible { outline: 3px solid #b45309; outline-offset: 2px; }
  .ok, .bad { padding: .5rem .75rem; border-left: 4px solid; border-radius: .375rem; margin: .5rem 0 0; }
  .ok { background: #ecfdf3; color: #14532d; border-color: #16a34a; }
  .bad { background: #fef2f2; color: #7f1d1d; border-color: #dc2626; }
  code { font-family: "DejaVu Sans Mono", monospace; overflow-wrap: anywhere; }
</style>
</head>
<body>
<main>
<h1>Example site: free tickets</h1>

<section class="box" aria-label="Your account">
<?php if ($userId !== null): ?>
  <form method="post" action="<?= h($self) ?>">
    <p>Signed in as <strong id="user">user <?= h($userId) ?></strong>.</p>
    <input type="hidden" name="csrf" value="<?= h($_SESSION['csrf']) ?>">
    <button type="submit" name="action" value="logout" class="secondary">Sign out</button>
  </form>
<?php elseif ($demoLogin): ?>
  <form method="post" action="<?= h($self) ?>">
    <p class="muted">Stand-in login of this example (any user id, no password).</p>
    <label for="user_id">User id</label>
    <input id="user_id" name="user_id" type="number" min="1" required inputmode="numeric">
    <input type="hidden" name="csrf" value="<?= h($_SESSION['csrf']) ?>">
    <button type="submit" name="action" value="login">Sign in</button>
  </form>
<?php else: ?>
  <p>Sign in on the site to take a free ticket.</p>
<?php endif; ?>
</section>

<?php if ($events === null): ?>
  <p class="bad" role="status">The events could not be loaded: the ticket service is unavailable right now.</p>
<?php else: ?>
<?php foreach ($events as $ev):
    $id = (int) $ev['id'];
    $free = !empty($ev['free_for_premium']);
    $left = $ev['free_left'];
    $ticket = null;
    if ($free && $userId !== null) {
        $t = tickets_ticket($userId, $id);
        $ticket = $t['ticket'];
    }
?>
  <article class="box event" data-event-id="<?= $id ?>" aria-labelledby="ev<?= $id ?>">
    <h2 id="ev<?= $id ?>"><?= h($ev['title']) ?></h2>
    <p class="muted"><?= h(gmdate('D j M Y, H:i', strtotime($ev['starts_at']))) ?> UTC ·
      <?php if (!$free): ?>not free for premium members
      <?php elseif ($left === null): ?>free for premium members, no seat limit
      <?php else: ?><?= (int) $left ?> free seat<?= $left == 1 ? '' : 's' ?> left<?php endif; ?></p>
    <?php if ($ticket !== null): ?>
      <p class="ok">Your ticket code: <code class="code"><?= h($ticket['code']) ?></code></p>
    <?php elseif ($free && $userId !== null): ?>
      <form method="post" action="<?= h($self) ?>">
        <input type="hidden" name="csrf" value="<?= h($_SESSION['csrf']) ?>">
        <input type="hidden" name="event_id" value="<?= $id ?>">
        <button type="submit" name="action" value="participate">Participate<span style="position:absolute;left:-9999px"> in <?= h($ev['title']) ?></span></button>
      </form>
    <?php endif; ?>
    <?php if (isset($flash[$id])): ?>
      <p class="message <?= h($flash[$id][0]) ?>" role="status"><?= h($flash[$id][1]) ?></p>
    <?php endif; ?>
  </article>
<?php endforeach; ?>
<?php endif; ?>
</main>
</body>
</html>
