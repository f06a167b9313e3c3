// The sandbox page: a website on qrlogin.js, a phone and a backend. Every new session resets
// the phone's scan token and the backend's ticket, so nothing of an old login is shown.
(function () {
  'use strict';
  var $ = function (id) { return document.getElementById(id); };
  var callback = document.body.dataset.callback;
  var widget = null, sessionId = null, scanToken = null;

  function show(id, value) { $(id).textContent = typeof value === 'string' ? value : JSON.stringify(value, null, 2); }

  function call(method, path, body, headers) {
    var init = { method: method, headers: Object.assign({ 'content-type': 'application/json' }, headers || {}) };
    if (body !== undefined) init.body = JSON.stringify(body);
    return fetch(path, init).then(function (r) { return r.json(); });
  }

  function useTicket(ticket) {
    $('ticket').value = ticket || '';
    show('redeemed', ticket ? 'Ticket received: redeem it within 60 s.' : '');
  }

  function mount() {
    if (widget) widget.destroy();
    sessionId = scanToken = null;
    useTicket('');
    show('phonelog', '');
    widget = QrLogin.mount($('widget'), {
      connection: $('connection').value,
      lang: $('lang').value,
      onSession: function (session) {
        sessionId = session.id;
        scanToken = null;
        useTicket('');
        $('session').textContent = session.id;
      },
      onScanned: function () { show('phonelog', 'The page shows: scanned.'); },
      onSuccess: function (result) { useTicket(result.ticket); },
      onError: function (e) { show('phonelog', e.code + ': ' + e.message); }
    });
  }

  function hostedUrl(mode) {
    var query = new URLSearchParams({ connection: $('connection').value, redirect_uri: callback, state: 'sandbox-' + Date.now(), lang: $('lang').value });
    if (mode) query.set('mode', mode);
    return '/login?' + query.toString();
  }

  function mint(kind) {
    var body = { user: $('user').value };
    if (kind === 'phone-code') body.phone = $('phone').value;
    return call('POST', '/sandbox/wechat/_sim/' + kind, body).then(function (answer) { return answer.code; });
  }

  $('mount').onclick = mount;
  $('connection').onchange = mount;
  $('lang').onchange = mount;
  $('popup').onclick = function () {
    if (widget) widget.destroy();
    widget = null;
    useTicket('');
    QrLogin.popup({ connection: $('connection').value, redirectUri: callback, lang: $('lang').value })
      .then(function (result) { useTicket(result.ticket); }, function (e) { show('redeemed', String(e.message || e)); });
  };
  $('hosted').onclick = function (event) { event.preventDefault(); window.location.assign(hostedUrl()); };

  $('scan').onclick = function () {
    if (!sessionId) return show('phonelog', 'Start a login first.');
    mint('login-code').then(function (code) {
      return call('POST', '/v1/mp/scan', { scene: sessionId, login_code: code, launch_scene: 1047 });
    }).then(function (body) { scanToken = body.scan_token || scanToken; show('phonelog', body); });
  };
  $('confirm').onclick = function () {
    mint('phone-code').then(function (code) {
      return call('POST', '/v1/mp/confirm', { scene: sessionId, scan_token: scanToken || '', phone_code: code });
    }).then(function (body) { show('phonelog', body); });
  };
  $('cancel').onclick = function () {
    call('POST', '/v1/mp/cancel', { scene: sessionId, scan_token: scanToken || '' }).then(function (body) { show('phonelog', body); });
  };
  $('redeem').onclick = function () {
    call('POST', '/v1/tickets/redeem', { ticket: $('ticket').value }, { authorization: 'Bearer ' + $('backend').value })
      .then(function (body) { show('redeemed', body); });
  };

  // Back from the hosted page (redirect mode): the ticket arrived in the query.
  var back = new URLSearchParams(window.location.search);
  if (back.get('ticket')) {
    useTicket(back.get('ticket'));
    history.replaceState(null, '', '/sandbox');
  } else {
    mount();
  }
})();
