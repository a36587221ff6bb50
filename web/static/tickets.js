/* tickets-fcgi page: list the upcoming events, claim a free ticket, show it.
 *
 * Plain JavaScript, no build step, no dependencies. The server is the only
 * guard against double tickets: the button is disabled while a claim is in
 * flight and after success only to spare people confusion, and a claim may
 * be sent any number of times (the API answers 201 once, then 200 with the
 * same ticket).
 *
 * Who is signed in (a bearer token, an HS256 JWT minted by the site):
 *   - `make run` only: /demo/tokens.json lists demo users and their tokens,
 *     and the page offers a demo sign-in. Production nginx has no such path.
 *   - the site opens the page as /#token=<jwt> (the fragment never reaches a
 *     server or a log), or its own script calls ticketsPage.signIn(jwt, name).
 *   The token is kept in sessionStorage (this tab only) until sign-out.
 *
 * window.ticketsPage is the page's API (used by the browser tests too):
 *   claim(eventId) -> Promise<{status, body}>   the same code the button runs
 *   signIn(token, name), signOut(), reload()
 */
(function () {
  'use strict';

  var TOKEN_KEY = 'tickets.token';
  var NAME_KEY = 'tickets.name';
  var TICKET_LOOKUPS_AT_ONCE = 4;

  // Every answer of the contract that is not a ticket, in words for people.
  // final: the same claim will get the same answer, so the button stays off.
  var REFUSALS = {
    not_premium: {
      text: 'Free tickets are for premium members, and your premium membership is not active.',
      final: true
    },
    not_free: {
      text: 'This event is not free for premium members: tickets for it are sold in the shop.',
      final: true
    },
    event_started: {
      text: 'This event has already started, so free tickets are no longer handed out.',
      final: true
    },
    paid_order_exists: {
      text: 'You already have an order for this event, so it has no free ticket for you.',
      final: true
    },
    sold_out: {
      text: 'Sold out: all free tickets for this event have been taken.',
      final: true
    },
    event_not_found: {
      text: 'This event no longer exists. Reload the page to see the current events.',
      final: true
    },
    busy: {
      text: 'Another request for your tickets is still running. Please try again in a moment.',
      final: false
    },
    unavailable: {
      text: 'The ticket service is unavailable right now. Please try again in a moment.',
      final: false
    },
    unauthorized: {
      text: 'You are not signed in, or your sign-in has expired. Please sign in again.',
      final: false
    }
  };
  var NETWORK_ERROR = 'Could not reach the ticket service. Check your connection and try again; ' +
    'if your claim went through, trying again shows your ticket.';
  var OTHER_ERROR = 'Something went wrong. Please reload the page and try again.';

  var $ = function (id) { return document.getElementById(id); };
  var state = {
    token: null,
    name: null,
    demo: null,          // [{id, label, token}] when the server offers demo users
    cards: new Map()     // event id (number) -> card
  };

  // -- storage (sessionStorage may be unavailable: private modes, policies)

  function store(key, value) {
    try {
      if (value === null) sessionStorage.removeItem(key);
      else sessionStorage.setItem(key, value);
    } catch (e) { /* the page still works for this load */ }
  }

  function stored(key) {
    try { return sessionStorage.getItem(key); } catch (e) { return null; }
  }

  // -- HTTP

  function api(method, path) {
    var headers = { 'Accept': 'application/json' };
    if (state.token) headers['Authorization'] = 'Bearer ' + state.token;
    return fetch(path, { method: method, headers: headers, cache: 'no-store', credentials: 'omit' })
      .then(function (r) {
        return r.text().then(function (text) {
          var body = null;
          try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
          return { status: r.status, body: body, retryAfter: r.headers.get('Retry-After') };
        });
      }, function () {
        return { status: 0, body: null, retryAfter: null };
      });
  }

  function errorCode(res) {
    if (res.status === 0) return 'network';
    if (res.body && typeof res.body.error === 'string') return res.body.error;
    if (res.status === 401) return 'unauthorized';
    if (res.status >= 500) return 'unavailable';
    return 'other';
  }

  // -- page-wide status

  function pageStatus(text, bad) {
    var el = $('page-status');
    el.textContent = text;
    el.classList.toggle('bad', !!bad);
  }

  // -- events

  function formatWhen(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) return iso;
    try {
      return new Intl.DateTimeFormat(undefined, {
        weekday: 'short', day: 'numeric', month: 'short', year: 'numeric',
        hour: '2-digit', minute: '2-digit'
      }).format(d);
    } catch (e) {
      return d.toString();
    }
  }

  function seatsText(ev) {
    if (!ev.free_for_premium) return { text: 'Not free for premium members.', strong: null };
    if (ev.free_left === null || ev.free_left === undefined) {
      return { text: ' for premium members, no seat limit.', strong: 'Free' };
    }
    if (ev.free_left <= 0) return { text: ': no free seats left.', strong: 'Sold out' };
    return {
      text: ev.free_left === 1 ? ' free seat left.' : ' free seats left.',
      strong: String(ev.free_left)
    };
  }

  function renderSeats(card) {
    var s = seatsText(card.event);
    var el = card.seats;
    el.textContent = '';
    if (s.strong !== null) {
      var b = document.createElement('strong');
      b.textContent = s.strong;
      el.appendChild(b);
    }
    el.appendChild(document.createTextNode(s.text));
  }

  function buildCard(ev) {
    var node = $('event-template').content.firstElementChild.cloneNode(true);
    var id = Number(ev.id);
    var titleId = 'event-' + id + '-title';
    var card = {
      id: id,
      event: ev,
      el: node,
      button: node.querySelector('.participate'),
      seats: node.querySelector('.event-seats'),
      ticketEl: node.querySelector('.ticket'),
      codeEl: node.querySelector('.ticket-code'),
      msg: node.querySelector('.message'),
      inflight: 0,
      ticket: null,
      created: false,     // a claim of this page created the ticket
      final: false,
      sayTimer: null
    };
    node.dataset.eventId = String(id);
    node.querySelector('article').setAttribute('aria-labelledby', titleId);
    var h = node.querySelector('.event-title');
    h.id = titleId;
    h.textContent = ev.title;
    var time = node.querySelector('time');
    time.dateTime = ev.starts_at;
    time.textContent = formatWhen(ev.starts_at);
    card.seats.id = 'event-' + id + '-seats';
    card.msg.id = 'event-' + id + '-message';
    card.msg.tabIndex = -1;
    card.ticketEl.tabIndex = -1;
    renderSeats(card);
    if (ev.free_for_premium && !(ev.free_left !== null && ev.free_left <= 0)) {
      card.button.querySelector('.visually-hidden').textContent = ' in ' + ev.title;
      card.button.setAttribute('aria-describedby', card.seats.id + ' ' + card.msg.id);
      card.button.addEventListener('click', function () {
        if (!card.button.disabled) claim(id, true);
      });
    } else {
      node.querySelector('.event-actions').remove();
      card.button = null;
    }
    return card;
  }

  function renderEvents(events) {
    var list = $('events');
    list.textContent = '';
    state.cards = new Map();
    events.forEach(function (ev) {
      var card = buildCard(ev);
      state.cards.set(card.id, card);
      list.appendChild(card.el);
    });
  }

  // data-ready on <html>: "false" while the events and the user's tickets
  // load, "true" once they are shown (the browser tests wait for it).
  function loadEvents() {
    document.documentElement.dataset.ready = 'false';
    return fetchEvents().then(function (ok) {
      document.documentElement.dataset.ready = 'true';
      return ok;
    });
  }

  function fetchEvents() {
    pageStatus('Loading the events…');
    $('reload').hidden = true;
    return api('GET', '/api/events').then(function (res) {
      if (res.status !== 200 || !res.body || !Array.isArray(res.body.events)) {
        var code = errorCode(res);
        pageStatus(code === 'network'
          ? 'Could not reach the ticket service to load the events.'
          : 'The events could not be loaded: the ticket service is unavailable right now.', true);
        $('reload').hidden = false;
        return false;
      }
      renderEvents(res.body.events);
      var free = res.body.events.filter(function (e) { return e.free_for_premium; }).length;
      pageStatus(res.body.events.length === 0 ? 'There are no upcoming events.'
        : res.body.events.length + (res.body.events.length === 1 ? ' upcoming event, ' : ' upcoming events, ') +
          free + ' free for premium members.');
      return loadTickets().then(function () { return true; });
    });
  }

  // Seat counts again after a claim (the list itself stays as it is).
  function refreshSeats() {
    return api('GET', '/api/events').then(function (res) {
      if (res.status !== 200 || !res.body || !Array.isArray(res.body.events)) return;
      res.body.events.forEach(function (ev) {
        var card = state.cards.get(Number(ev.id));
        if (card) {
          card.event = ev;
          renderSeats(card);
        }
      });
    });
  }

  // The signed-in user's tickets for the free events, a few requests at once.
  function loadTickets() {
    if (!state.token) return Promise.resolve();
    var token = state.token;
    var queue = [];
    state.cards.forEach(function (card) {
      if (card.event.free_for_premium) queue.push(card);
    });
    var problem = null;
    function next() {
      var card = queue.shift();
      if (!card || state.token !== token) return Promise.resolve();
      return api('GET', '/api/events/' + card.id + '/participation').then(function (res) {
        if (state.token !== token) return;
        if (res.status === 200 && res.body && res.body.ticket) {
          showTicket(card, res.body.ticket, 'You have a ticket for this event.', false);
        } else if (res.status === 401) {
          problem = REFUSALS.unauthorized.text;
        } else if (res.status !== 404) {
          problem = 'Your tickets could not all be checked right now; reload the page to try again.';
        }
        return next();
      });
    }
    var workers = [];
    for (var i = 0; i < TICKET_LOOKUPS_AT_ONCE; i++) workers.push(next());
    return Promise.all(workers).then(function () {
      if (problem) pageStatus(problem, true);
    });
  }

  // -- one card's state

  // Messages go through a live region, which announces changes. The same
  // message again (a second "busy") is cleared first and set a moment
  // later, so that it is announced again.
  function say(card, text, kind) {
    clearTimeout(card.sayTimer);
    var set = function () {
      card.msg.className = 'message ' + kind;
      card.msg.textContent = text;
    };
    if (card.msg.textContent !== text) {
      set();
      return;
    }
    card.msg.textContent = '';
    card.msg.className = 'message';
    card.sayTimer = setTimeout(set, 50);
  }

  function updateButton(card) {
    if (!card.button) return;
    var off = card.inflight > 0 || card.ticket !== null || card.final;
    card.button.disabled = off;
    card.button.setAttribute('aria-busy', card.inflight > 0 ? 'true' : 'false');
    card.button.firstChild.nodeValue = card.ticket !== null ? 'Ticket taken'
      : card.inflight > 0 ? 'Participating…' : 'Participate';
  }

  function showTicket(card, ticket, text, moveFocus) {
    var first = card.ticket === null;
    card.ticket = ticket;
    card.codeEl.textContent = ticket.code;
    card.ticketEl.hidden = false;
    updateButton(card);
    if (first) {
      say(card, text, 'ok');
      if (moveFocus) card.ticketEl.focus();
    }
  }

  var READY = 'Your ticket is ready. Show this code at the entrance.';

  function showOutcome(card, res, hadFocus) {
    if ((res.status === 200 || res.status === 201) && res.body && res.body.ticket) {
      var created = res.body.created === true;
      if (created && card.ticket !== null && !card.created) {
        // answers of simultaneous claims arrive in any order: the one that
        // created the ticket says so, even after a "you already have it"
        say(card, READY, 'ok');
      }
      if (created) card.created = true;
      showTicket(card, res.body.ticket, created ? READY
        : 'You already have a ticket for this event.', hadFocus);
      return;
    }
    if (card.ticket !== null) return;  // a late answer never hides a ticket
    var code = errorCode(res);
    var refusal = REFUSALS[code];
    var text;
    if (code === 'network') text = NETWORK_ERROR;
    else if (refusal) text = refusal.text;
    else text = OTHER_ERROR + ' (' + code + ')';
    if (code === 'unauthorized' && !state.token) {
      text = 'You are not signed in. Sign in to take a free ticket.';
    }
    var wait = parseInt(res.retryAfter, 10);
    if ((code === 'busy' || code === 'unavailable') && wait > 1) {
      text = text.replace('in a moment', 'in ' + wait + ' seconds');
    }
    if (refusal && refusal.final) card.final = true;
    updateButton(card);
    say(card, text, 'bad');
    if (hadFocus) {
      if (card.button && !card.button.disabled) card.button.focus();
      else card.msg.focus();
    }
  }

  // The claim itself: what the button runs, callable directly (the tests
  // fire it 30 times at once, past the disabled button).
  function claim(eventId, fromButton) {
    var id = Number(eventId);
    var card = state.cards.get(id);
    var hadFocus = !!(fromButton && card && card.button && document.activeElement === card.button);
    if (card) {
      card.inflight++;
      updateButton(card);
      if (card.ticket === null) say(card, 'Asking for your ticket…', 'info');
    }
    return api('POST', '/api/events/' + id + '/participation').then(function (res) {
      if (card) {
        card.inflight--;
        showOutcome(card, res, hadFocus);
        if (res.status === 201 || errorCode(res) === 'sold_out') refreshSeats();
      }
      return { status: res.status, body: res.body };
    });
  }

  // -- who is signed in

  function nameFromToken(token) {
    try {
      var part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      var payload = JSON.parse(atob(part));
      if (payload && payload.sub !== undefined) return 'user ' + payload.sub;
    } catch (e) { /* not ours to judge: the server checks the token */ }
    return 'your account';
  }

  function showAccount() {
    var signedIn = !!state.token;
    $('signed-in').hidden = !signedIn;
    $('user-name').textContent = signedIn ? state.name : '';
    $('demo-signin').hidden = signedIn || !state.demo;
    $('signed-out').hidden = signedIn || !!state.demo;
  }

  function signIn(token, name) {
    state.token = token || null;
    state.name = state.token ? (name || nameFromToken(state.token)) : null;
    store(TOKEN_KEY, state.token);
    store(NAME_KEY, state.name);
    showAccount();
    return loadEvents();
  }

  function signOut() {
    var r = signIn(null, null);
    var sel = $('demo-user');
    if (!$('demo-signin').hidden && sel) sel.focus();
    return r;
  }

  function loadDemo() {
    return fetch('/demo/tokens.json', { cache: 'no-store', credentials: 'omit' }).then(function (r) {
      if (!r.ok) return null;
      return r.json().catch(function () { return null; });
    }, function () { return null; }).then(function (data) {
      if (!data || !Array.isArray(data.users) || data.users.length === 0) return;
      state.demo = data.users;
      var sel = $('demo-user');
      sel.textContent = '';
      data.users.forEach(function (u) {
        var opt = document.createElement('option');
        opt.value = String(u.id);
        opt.textContent = u.label;
        sel.appendChild(opt);
      });
    });
  }

  // #token=<jwt> from the site: taken, then removed from the address bar.
  function tokenFromHash() {
    var m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (!m) return null;
    history.replaceState(null, '', location.pathname + location.search);
    try { return decodeURIComponent(m[1]); } catch (e) { return null; }
  }

  function init() {
    var handed = tokenFromHash();
    if (handed) {
      store(TOKEN_KEY, handed);
      store(NAME_KEY, null);
    }
    // the site may also hand a token to a page that is already open
    window.addEventListener('hashchange', function () {
      var t = tokenFromHash();
      if (t) signIn(t, null);
    });
    state.token = stored(TOKEN_KEY);
    state.name = state.token ? (stored(NAME_KEY) || nameFromToken(state.token)) : null;

    $('demo-signin').addEventListener('submit', function (e) {
      e.preventDefault();
      var id = $('demo-user').value;
      var user = (state.demo || []).filter(function (u) { return String(u.id) === id; })[0];
      if (!user) return;
      signIn(user.token, user.label).then(function () { $('sign-out').focus(); });
    });
    $('sign-out').addEventListener('click', function () { signOut(); });
    $('reload').addEventListener('click', function () { loadEvents(); });

    loadDemo().then(function () {
      showAccount();
      return loadEvents();
    });
  }

  window.ticketsPage = {
    claim: function (eventId) { return claim(eventId, false); },
    signIn: signIn,
    signOut: signOut,
    reload: loadEvents,
    refusals: REFUSALS
  };

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
