<?php
/*
 * tickets-fcgi client for a plain PHP site: sign a short-lived token for the
 * site's own logged-in user and call the API server-side. One file, no
 * framework, no Composer; needs PHP 7.4 or later with the curl extension
 * (Debian: php8.2-curl).
 *
 *   require __DIR__ . '/tickets.php';
 *   $r = tickets_claim($userId, $eventId);       // POST .../participation
 *   if ($r['ticket'] !== null) echo $r['ticket']['code'];
 *   else echo htmlspecialchars(tickets_message($r));
 *
 * Configuration (environment, e.g. `env[...]` in the php-fpm pool, or define
 * the constants of the same names before the require):
 *   TICKETS_API_URL          where tickets-fcgi's nginx answers, e.g.
 *                            http://127.0.0.1:8080 (no trailing /api)
 *   TICKETS_JWT_SECRET_FILE  the file holding the HS256 secret that
 *                            tickets-fcgi reads (TICKETS_JWT_SECRET_FILE of the
 *                            app); keep it out of the document root
 *
 * The secret never leaves the server: the browser talks to this site only,
 * and this site talks to tickets-fcgi with a token that lives 60 seconds.
 */

declare(strict_types=1);

const TICKETS_TOKEN_LIFETIME = 60;   // seconds; the app allows 60 s of skew
const TICKETS_TIMEOUT = 35;          // above nginx's 30 s read timeout

function tickets_setting(string $name): string
{
    if (defined($name)) {
        return (string) constant($name);
    }
    $value = getenv($name);
    if ($value === false || $value === '') {
        throw new RuntimeException("tickets: $name is not set");
    }
    return $value;
}

function tickets_b64url(string $data): string
{
    return rtrim(strtr(base64_encode($data), '+/', '-_'), '=');
}

/* The shared secret, as the app reads it: the file's content less one
 * trailing newline. Read once per request. */
function tickets_secret(): string
{
    static $secret = null;
    if ($secret === null) {
        $file = tickets_setting('TICKETS_JWT_SECRET_FILE');
        $data = @file_get_contents($file);
        if ($data === false || $data === '') {
            throw new RuntimeException("tickets: cannot read the secret file $file");
        }
        if (substr($data, -1) === "\n") {
            $data = substr($data, 0, -1);
        }
        $secret = $data;
    }
    return $secret;
}

/* An HS256 JWT for the site's user: sub is the user id as a decimal string,
 * exp a minute from now. */
function tickets_token(int $userId, ?string $secret = null, int $lifetime = TICKETS_TOKEN_LIFETIME): string
{
    if ($userId < 1) {
        throw new InvalidArgumentException('tickets: user ids start at 1');
    }
    $now = time();
    $header = tickets_b64url(json_encode(['alg' => 'HS256', 'typ' => 'JWT']));
    $payload = tickets_b64url(json_encode([
        'sub' => (string) $userId,
        'iat' => $now,
        'exp' => $now + $lifetime,
    ]));
    $signature = hash_hmac('sha256', "$header.$payload", $secret ?? tickets_secret(), true);
    return "$header.$payload." . tickets_b64url($signature);
}

/* One API call. Returns ['status' => int, 'body' => array|null,
 * 'retry_after' => int|null]; status 0 when tickets-fcgi could not be
 * reached at all. */
function tickets_request(string $method, string $path, ?int $userId = null): array
{
    $headers = ['Accept: application/json'];
    if ($userId !== null) {
        $headers[] = 'Authorization: Bearer ' . tickets_token($userId);
    }
    $retryAfter = null;
    $ch = curl_init(rtrim(tickets_setting('TICKETS_API_URL'), '/') . $path);
    curl_setopt_array($ch, [
        CURLOPT_CUSTOMREQUEST => $method,
        CURLOPT_HTTPHEADER => $headers,
        CURLOPT_RETURNTRANSFER => true,
        CURLOPT_CONNECTTIMEOUT => 5,
        CURLOPT_TIMEOUT => TICKETS_TIMEOUT,
        CURLOPT_FOLLOWLOCATION => false,
        CURLOPT_PROTOCOLS => CURLPROTO_HTTP | CURLPROTO_HTTPS,
        CURLOPT_HEADERFUNCTION => function ($ch, string $line) use (&$retryAfter): int {
            if (stripos($line, 'Retry-After:') === 0) {
                $retryAfter = (int) trim(substr($line, 12));
            }
            return strlen($line);
        },
    ]);
    if ($method === 'POST') {
        curl_setopt($ch, CURLOPT_POSTFIELDS, '');   // an empty body is allowed
    }
    $text = curl_exec($ch);
    $status = $text === false ? 0 : (int) curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
    if ($text === false) {
        error_log('tickets: ' . $method . ' ' . $path . ': ' . curl_error($ch));
    }
    curl_close($ch);
    $body = is_string($text) ? json_decode($text, true) : null;
    return [
        'status' => $status,
        'body' => is_array($body) ? $body : null,
        'retry_after' => $retryAfter,
    ];
}

/* The result of a claim or a lookup: 'ticket' (array or null), 'created'
 * (true only the first time), 'error' (the contract's error code, or
 * 'network'), and the raw 'status'. */
function tickets_result(array $r): array
{
    $body = $r['body'] ?? [];
    $ticket = (($r['status'] === 200 || $r['status'] === 201) && isset($body['ticket']))
        ? $body['ticket'] : null;
    $error = null;
    if ($ticket === null) {
        if ($r['status'] === 0) {
            $error = 'network';
        } elseif (isset($body['error']) && is_string($body['error'])) {
            $error = $body['error'];
        } else {
            $error = $r['status'] >= 500 ? 'unavailable' : 'unexpected';
        }
    }
    return [
        'status' => $r['status'],
        'ticket' => $ticket,
        'created' => $ticket !== null && !empty($body['created']),
        'error' => $error,
        'retry_after' => $r['retry_after'],
    ];
}

/* Claim the free ticket of $eventId for the site's user $userId. Safe to
 * repeat: the same ticket comes back, never a second one. */
function tickets_claim(int $userId, int $eventId): array
{
    return tickets_result(tickets_request('POST', "/api/events/$eventId/participation", $userId));
}

/* The user's ticket for the event, or 'error' => 'no_ticket'. */
function tickets_ticket(int $userId, int $eventId): array
{
    return tickets_result(tickets_request('GET', "/api/events/$eventId/participation", $userId));
}

/* Upcoming events (no token needed); null when tickets-fcgi cannot answer. */
function tickets_events(): ?array
{
    $r = tickets_request('GET', '/api/events');
    return ($r['status'] === 200 && isset($r['body']['events'])) ? $r['body']['events'] : null;
}

/* Words for people, for every answer that is not a ticket. */
function tickets_message(array $result): string
{
    $messages = [
        'not_premium' => 'Free tickets are for premium members, and your premium membership is not active.',
        'not_free' => 'This event is not free for premium members: tickets for it are sold in the shop.',
        'event_started' => 'This event has already started, so free tickets are no longer handed out.',
        'paid_order_exists' => 'You already have an order for this event, so it has no free ticket for you.',
        'sold_out' => 'Sold out: all free tickets for this event have been taken.',
        'event_not_found' => 'This event no longer exists.',
        'no_ticket' => 'You have no ticket for this event yet.',
        'busy' => 'Another request for your tickets is still running. Please try again in a moment.',
        'unavailable' => 'The ticket service is unavailable right now. Please try again in a moment.',
        'network' => 'The ticket service could not be reached. Please try again in a moment.',
        'unauthorized' => 'The ticket service did not accept this site\'s sign-in (check the shared secret).',
    ];
    return $messages[$result['error']] ?? 'Something went wrong (' . $result['error'] . '). Please try again later.';
}
