/*! qrlogin.js — the WeChat login widget of qrlogin-relay. No dependencies, no build step.
 *
 *   QrLogin.mount(element, {relay, connection, lang, onScanned, onSuccess, onError, onSession})
 *     renders the login widget inside `element` (the page's origin must be one of the
 *     connection's allowed_origins); onSuccess({ticket}) receives the one-time ticket,
 *     onSession({id, expires_at}) hears of each new code's session. Returns {destroy()}.
 *   QrLogin.popup({relay, connection, redirectUri, state, lang}) -> Promise<{ticket, state}>
 *     opens the hosted login page in a popup and resolves with its ticket.
 *
 * The hosted login page (/login) runs this same file (see hostedPage at the bottom).
 */
(function (global) {
  'use strict';

  var STRINGS = {
    'zh-CN': {
      loading: '正在生成二维码…',
      waitingCode: '请使用微信扫一扫登录',
      waitingWebsite: '请使用微信扫描二维码登录',
      scanned: '已扫码，请在手机上确认登录',
      scannedBy: '{name} 已扫码，请在手机上确认登录',
      confirmed: '登录成功',
      cancelled: '已在手机上取消登录',
      declined: '已在微信中拒绝授权',
      denied: '无法登录：{reason}',
      expired: '二维码已过期',
      refresh: '刷新二维码',
      trouble: '网络连接中断，正在重新连接…',
      failed: '登录出错：{message}',
      retry: '重试',
      countdown: '{s} 秒后过期',
      tabCode: '小程序码登录',
      tabWebsite: '微信扫码登录',
      openWeChat: '无法显示？在新页面中打开微信登录',
      codeAlt: '{name} 的微信登录码：请使用微信扫一扫',
      frameTitle: '微信登录',
      popupBlocked: '浏览器拦截了登录弹窗',
      popupClosed: '登录窗口已关闭',
      errors: {
        rate_limited: '操作过于频繁，请稍后再试',
        origin_not_allowed: '此网站未被允许使用该登录',
        unknown_connection: '登录配置不存在',
        session_not_found: '登录已失效',
        store_unavailable: '服务暂时不可用',
        wechat_busy: '微信繁忙，请稍后再试',
        wechat_unavailable: '暂时无法连接微信',
        network: '网络连接失败'
      }
    },
    en: {
      loading: 'Preparing your login code…',
      waitingCode: 'Scan with WeChat to log in',
      waitingWebsite: 'Scan the QR code with WeChat to log in',
      scanned: 'Scanned — confirm on your phone',
      scannedBy: '{name} scanned — confirm on your phone',
      confirmed: 'Logged in',
      cancelled: 'The login was cancelled on the phone',
      declined: 'The login was declined in WeChat',
      denied: 'Login refused: {reason}',
      expired: 'This code has expired',
      refresh: 'Show a new code',
      trouble: 'Connection lost — reconnecting…',
      failed: 'Something went wrong: {message}',
      retry: 'Try again',
      countdown: 'Expires in {s} s',
      tabCode: 'Mini-program code',
      tabWebsite: 'WeChat QR login',
      openWeChat: 'Not showing? Open WeChat login in this window',
      codeAlt: 'WeChat login code for {name}: scan it with WeChat',
      frameTitle: 'WeChat login',
      popupBlocked: 'The browser blocked the login window',
      popupClosed: 'The login window was closed',
      errors: {
        rate_limited: 'Too many attempts; wait a moment and try again',
        origin_not_allowed: 'This website may not use this login',
        unknown_connection: 'This login is not configured',
        session_not_found: 'This login is no longer valid',
        store_unavailable: 'The login service is briefly unavailable',
        wechat_busy: 'WeChat is busy; try again shortly',
        wechat_unavailable: 'WeChat cannot be reached right now',
        network: 'The network connection failed'
      }
    }
  };

  /** Codes that expire while nobody looks are renewed this many times, then wait for a click. */
  var UNATTENDED_REFRESHES = 3;
  /** Long-poll: how long one request waits for a change. */
  var POLL_WAIT_SECS = 25;
  var BACKOFF_MS = [500, 1000, 2000, 4000, 8000];
  /** A popup whose opener never confirms the ticket closes after this long. */
  var POPUP_CLOSE_FALLBACK_MS = 3000;
  /** After a relay restart (close 1012), reconnect within this long. */
  var RESTART_JITTER_MS = 1000;

  function pickLang(asked) {
    if (asked === 'zh-CN' || asked === 'en') return asked;
    var nav = (global.navigator && (global.navigator.language || '')) || '';
    return nav.toLowerCase().indexOf('zh') === 0 ? 'zh-CN' : 'en';
  }

  function fill(text, values) {
    return text.replace(/\{(\w+)\}/g, function (_, key) { return values[key] === undefined ? '' : values[key]; });
  }

  function el(tag, className, parent) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (parent) parent.appendChild(node);
    return node;
  }

  function originOf(url) {
    return new URL(url, global.location.href).origin;
  }

  /** An error a person can read, from the relay's JSON error body or a network failure. */
  function RelayError(code, message, status) {
    this.code = code;
    this.message = message;
    this.status = status;
  }

  function request(method, url, body, secret, signal) {
    var headers = {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (secret) headers.Authorization = 'Bearer ' + secret;
    return fetch(url, {
      method: method,
      headers: headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
      signal: signal
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (json) {
        if (response.ok) return json;
        throw new RelayError(json.error || 'http_' + response.status, json.message || response.statusText, response.status);
      });
    }, function (e) {
      if (e && e.name === 'AbortError') throw e;
      throw new RelayError('network', String(e && e.message || e), 0);
    });
  }

  /** Loads the widget's stylesheet once, from the relay (the hosted page links it itself). */
  function ensureStyles(relay) {
    var href = relay + '/qrlogin.css';
    var links = document.querySelectorAll('link[rel="stylesheet"]');
    for (var i = 0; i < links.length; i++) {
      if (links[i].href === href || links[i].getAttribute('href') === '/qrlogin.css') return;
    }
    var link = el('link', '', document.head);
    link.rel = 'stylesheet';
    link.href = href;
  }

  /**
   * One login widget: starts sessions, shows the code (or WeChat's own QR in an iframe), follows
   * the session over a WebSocket (long-poll when sockets are blocked), counts down, renews
   * expired codes, and hands the ticket to onSuccess.
   */
  function Widget(element, options) {
    if (!element || !options || !options.connection) throw new Error('QrLogin.mount(element, {connection, …})');
    this.relay = (options.relay || global.location.origin).replace(/\/+$/, '');
    this.relayOrigin = originOf(this.relay);
    this.options = options;
    this.lang = pickLang(options.lang);
    this.t = STRINGS[this.lang];
    this.session = null;
    this.transport = 'ws';
    this.refreshes = 0;
    this.generation = 0;
    this.failures = 0;
    this.finished = false;
    this.build(element);
    var self = this;
    this.onVisibility = function () { if (!document.hidden && self.expiredWhileHidden) self.renew(); };
    this.onMessage = function (event) { self.handoff(event); };
    document.addEventListener('visibilitychange', this.onVisibility);
    global.addEventListener('message', this.onMessage);
    this.load();
  }

  Widget.prototype.build = function (element) {
    var t = this.t;
    element.textContent = '';
    var root = el('div', 'qrlogin', element);
    root.lang = this.lang;
    var head = el('div', 'qrlogin-head', root);
    this.logo = el('img', 'qrlogin-logo', head);
    this.logo.alt = '';
    this.logo.hidden = true;
    this.name = el('span', 'qrlogin-name', head);
    this.tabs = el('div', 'qrlogin-tabs', root);
    this.tabs.setAttribute('role', 'tablist');
    this.tabs.hidden = true;
    var stage = el('div', 'qrlogin-stage', root);
    this.code = el('img', 'qrlogin-code', stage);
    this.code.hidden = true;
    this.frame = el('iframe', 'qrlogin-frame', stage);
    this.frame.title = t.frameTitle;
    this.frame.hidden = true;
    this.veil = el('div', 'qrlogin-veil', stage);
    this.veil.hidden = true;
    this.veilMark = el('div', 'qrlogin-veil-mark', this.veil);
    this.veilButton = el('button', 'qrlogin-button', this.veil);
    this.veilButton.type = 'button';
    this.veilButton.hidden = true;
    this.status = el('p', 'qrlogin-status', root);
    this.status.setAttribute('role', 'status');
    this.status.setAttribute('aria-live', 'polite');
    this.countdown = el('p', 'qrlogin-countdown', root);
    this.redirectLink = el('button', 'qrlogin-link', root);
    this.redirectLink.type = 'button';
    this.redirectLink.textContent = t.openWeChat;
    this.redirectLink.hidden = true;
    this.root = root;
    var self = this;
    this.veilButton.addEventListener('click', function () {
      self.refreshes = 0;
      // Before the connection is known there is nothing to renew: read it again.
      if (self.details) self.renew(); else self.load();
    });
    this.redirectLink.addEventListener('click', function () { self.openWeChatPage(); });
  };

  /** Reads the connection's name, logo and companion, then starts (or resumes) a session. */
  Widget.prototype.load = function () {
    var self = this;
    this.veil.hidden = true;
    this.say(this.t.loading, 'loading');
    request('GET', this.relay + '/v1/connections/' + encodeURIComponent(this.options.connection))
      .then(function (details) {
        self.details = details;
        self.name.textContent = details.display_name;
        self.logo.src = details.logo_url;
        self.logo.hidden = false;
        if (details.companion) self.showTabs(details);
        self.current = details.identifier;
        var resumed = self.options.resume && self.options.resume();
        if (resumed) return self.follow(resumed);
        return self.renew();
      })
      .catch(function (e) { self.fail(e); });
  };

  Widget.prototype.showTabs = function (details) {
    var self = this;
    this.tabs.hidden = false;
    [[details.identifier, this.t.tabCode], [details.companion.identifier, this.t.tabWebsite]].forEach(function (tab) {
      var button = el('button', 'qrlogin-tab', self.tabs);
      button.type = 'button';
      button.setAttribute('role', 'tab');
      button.dataset.connection = tab[0];
      button.textContent = tab[1];
      button.setAttribute('aria-selected', String(tab[0] === details.identifier));
      button.addEventListener('click', function () {
        if (self.current === tab[0] || self.finished) return;
        self.current = tab[0];
        Array.prototype.forEach.call(self.tabs.children, function (b) {
          b.setAttribute('aria-selected', String(b.dataset.connection === tab[0]));
        });
        self.refreshes = 0;
        self.renew();
      });
    });
  };

  /** Drops the current session (cancelling it if still open) and starts a new one. */
  Widget.prototype.renew = function () {
    var self = this;
    var old = this.session;
    this.stop();
    this.expiredWhileHidden = false;
    if (old && !old.over) request('DELETE', this.relay + '/v1/login-sessions/' + old.id, undefined, old.secret).catch(function () {});
    this.session = null;
    this.code.hidden = true;
    this.code.removeAttribute('src');
    this.frame.hidden = true;
    this.veil.hidden = true;
    this.redirectLink.hidden = true;
    this.say(this.t.loading, 'loading');
    var generation = this.generation;
    return request('POST', this.relay + '/v1/login-sessions', { connection: this.current })
      .then(function (created) {
        if (generation !== self.generation) return;
        return self.show(created).then(function () { self.follow(created); });
      })
      .catch(function (e) { if (generation === self.generation) self.fail(e); });
  };

  /** Shows the session's code, or WeChat's QR page in an iframe for a website connection. */
  Widget.prototype.show = function (created) {
    var self = this;
    if (created.code_url) {
      this.code.alt = fill(this.t.codeAlt, { name: this.details.display_name });
      this.code.src = created.code_url;
      this.code.hidden = false;
      return Promise.resolve();
    }
    return request('POST', created.website_url, { mode: 'embed' }, created.secret).then(function (answer) {
      self.frame.src = answer.url;
      self.frame.hidden = false;
      self.redirectLink.hidden = !self.options.returnTo;
    });
  };

  /** Follows a session until the browser has nothing more to wait for. */
  Widget.prototype.follow = function (session) {
    this.stop();
    var generation = this.generation;
    this.session = {
      id: session.id,
      secret: session.secret,
      wsUrl: session.ws_url,
      websiteUrl: session.website_url,
      deadline: Date.now() + 1000 * (session.expires_in !== undefined ? session.expires_in : Math.max(0, session.expires_at - Date.now() / 1000)),
      status: null,
      over: false
    };
    if (this.options.onSession) this.options.onSession({ id: session.id, expires_at: session.expires_at });
    if (session.code_url && this.code.hidden) {
      this.code.src = session.code_url;
      this.code.hidden = false;
    }
    this.tick();
    var self = this;
    this.timer = global.setInterval(function () { if (generation === self.generation) self.tick(); }, 1000);
    this.connect(generation);
  };

  /** Ends everything the current session had running (socket, poll, timers). */
  Widget.prototype.stop = function () {
    this.generation += 1;
    if (this.socket) { this.socket.onclose = this.socket.onmessage = this.socket.onerror = null; this.socket.close(); }
    this.socket = null;
    if (this.poller) this.poller.abort();
    this.poller = null;
    global.clearInterval(this.timer);
    global.clearTimeout(this.retryTimer);
  };

  Widget.prototype.connect = function (generation) {
    if (this.transport === 'poll' || !global.WebSocket) return this.poll(generation, null);
    var self = this;
    var session = this.session;
    var delivered = false;
    var socket;
    try {
      socket = new WebSocket(session.wsUrl);
    } catch (e) {
      this.transport = 'poll';
      return this.poll(generation, null);
    }
    this.socket = socket;
    socket.onopen = function () { socket.send(JSON.stringify({ type: 'auth', secret: session.secret })); };
    socket.onmessage = function (event) {
      delivered = true;
      self.failures = 0;
      var view;
      try { view = JSON.parse(event.data); } catch (e) { return; }
      self.update(view);
    };
    socket.onclose = function (event) {
      if (generation !== self.generation || session.over) return;
      if (event.code === 1012) {
        // The relay instance is restarting: reconnect (the load balancer picks another one)
        // after a short random pause, so its browsers do not all arrive at once.
        self.retryTimer = global.setTimeout(function () {
          if (generation === self.generation) self.connect(generation);
        }, Math.random() * RESTART_JITTER_MS);
        return;
      }
      if (!delivered && self.failures === 0) {
        // The socket never carried a frame: WebSockets are blocked on this network.
        self.transport = 'poll';
        return self.poll(generation, null);
      }
      if (event.code === 1008) return self.fail(new RelayError(event.reason || 'invalid_secret', event.reason, 401));
      self.troubled(generation, function () { self.connect(generation); });
    };
  };

  /** Long-poll: the first request reads the state at once; each next one returns as soon as
   * the status leaves the one last seen. */
  Widget.prototype.poll = function (generation, known) {
    var self = this;
    var session = this.session;
    if (generation !== this.generation || session.over) return;
    this.poller = global.AbortController ? new AbortController() : null;
    var url = this.relay + '/v1/login-sessions/' + session.id + (known ? '?wait=' + POLL_WAIT_SECS + '&status=' + known : '');
    request('GET', url, undefined, session.secret, this.poller && this.poller.signal)
      .then(function (view) {
        if (generation !== self.generation) return;
        self.failures = 0;
        self.update(view);
        self.poll(generation, view.status);
      })
      .catch(function (e) {
        if (generation !== self.generation || (e && e.name === 'AbortError')) return;
        if (e.status && e.status < 500) return self.fail(e);
        self.troubled(generation, function () { self.poll(generation, known); });
      });
  };

  /** Network trouble: say so, and try again with growing pauses. */
  Widget.prototype.troubled = function (generation, again) {
    var self = this;
    this.say(this.t.trouble, 'trouble');
    var pause = BACKOFF_MS[Math.min(this.failures, BACKOFF_MS.length - 1)];
    this.failures += 1;
    this.retryTimer = global.setTimeout(function () { if (generation === self.generation) again(); }, pause);
  };

  Widget.prototype.tick = function () {
    var session = this.session;
    if (!session || session.over) return;
    var left = Math.max(0, Math.ceil((session.deadline - Date.now()) / 1000));
    this.countdown.textContent = fill(this.t.countdown, { s: left });
    if (left === 0) this.expire();
  };

  /** A new state of the session, from the socket, the long-poll or a completion. */
  Widget.prototype.update = function (view) {
    var session = this.session;
    if (!session || view.id !== session.id || session.over) return;
    // A repeated status needs no new words, unless the page is saying there was trouble.
    if (view.status === session.status && this.root.dataset.state !== 'trouble') return;
    session.status = view.status;
    var t = this.t;
    var website = !!session.websiteUrl;
    switch (view.status) {
      case 'pending':
        this.say(website ? t.waitingWebsite : t.waitingCode, 'waiting');
        break;
      case 'scanned':
        this.say(view.scanned && view.scanned.nickname ? fill(t.scannedBy, { name: view.scanned.nickname }) : t.scanned, 'scanned');
        this.veilWith('scanned', null);
        if (this.options.onScanned) this.options.onScanned(view.scanned || {});
        break;
      case 'confirmed':
        if (!view.ticket) break;
        this.end('confirmed', t.confirmed, null);
        this.finished = true;
        if (this.options.onSuccess) this.options.onSuccess({ ticket: view.ticket });
        break;
      case 'cancelled':
      case 'denied':
        // The phone said no: a page that must report it (the OIDC face) leaves now.
        if (this.options.onRefused) {
          this.finished = true;
          this.options.onRefused(view.status);
          break;
        }
        if (view.status === 'denied') {
          this.end('denied', fill(t.denied, { reason: view.reason || '' }), t.retry);
          break;
        }
        this.end('cancelled', view.error === 'authorization_denied' ? t.declined
          : view.error ? fill(t.failed, { message: this.describe({ code: view.error, message: view.error }) }) : t.cancelled, t.retry);
        break;
      case 'expired':
        this.expire();
        break;
      default:
        this.end('failed', fill(t.failed, { message: view.status }), t.retry);
    }
  };

  /** The code ran out: renew it by itself a few times, while someone is looking. */
  Widget.prototype.expire = function () {
    var session = this.session;
    if (!session || session.over) return;
    if (document.hidden) {
      this.end('expired', this.t.expired, this.t.refresh);
      this.expiredWhileHidden = true;
      return;
    }
    if (this.refreshes < UNATTENDED_REFRESHES) {
      this.refreshes += 1;
      session.over = true;
      this.renew();
      return;
    }
    this.end('expired', this.t.expired, this.t.refresh);
  };

  /** The session is over for this browser: stop following it and say how it ended. */
  Widget.prototype.end = function (state, text, action) {
    if (this.session) this.session.over = true;
    this.stop();
    this.countdown.textContent = '';
    this.redirectLink.hidden = true;
    this.say(text, state);
    this.veilWith(state, action);
  };

  Widget.prototype.veilWith = function (state, action) {
    this.veil.hidden = false;
    this.veil.dataset.state = state;
    this.veilMark.textContent = state === 'confirmed' ? '✓' : state === 'scanned' ? '✓' : '!';
    this.veilButton.hidden = !action;
    if (action) this.veilButton.textContent = action;
  };

  Widget.prototype.describe = function (e) {
    return this.t.errors[e.code] || e.message || e.code;
  };

  Widget.prototype.fail = function (e) {
    this.end('failed', fill(this.t.failed, { message: this.describe(e) }), this.t.retry);
    if (this.options.onError) this.options.onError(e);
  };

  Widget.prototype.say = function (text, state) {
    this.status.textContent = text;
    this.root.dataset.state = state;
  };

  /** WeChat's QR page in the iframe came back without the binding cookie (a third-party
   * frame): it hands over a one-time completion code, which this browser's secret redeems. */
  Widget.prototype.handoff = function (event) {
    var data = event.data;
    var session = this.session;
    if (event.origin !== this.relayOrigin || event.source !== this.frame.contentWindow) return;
    if (!data || data.type !== 'qrlogin-website' || data.outcome !== 'handoff' || !session || data.session !== session.id) return;
    var self = this;
    request('POST', session.websiteUrl + '/complete', { completion: data.completion }, session.secret)
      .then(function (view) { self.update(view); })
      .catch(function (e) { self.fail(e); });
  };

  /** Redirect mode (hosted page only): this window goes to WeChat's page and comes back. */
  Widget.prototype.openWeChatPage = function () {
    var session = this.session;
    var self = this;
    if (!session || !session.websiteUrl) return;
    request('POST', session.websiteUrl, { mode: 'redirect', return_to: this.options.returnTo }, session.secret)
      .then(function (answer) {
        if (self.options.remember) self.options.remember(session, self.current);
        self.stop();
        global.location.assign(answer.url);
      })
      .catch(function (e) { self.fail(e); });
  };

  Widget.prototype.destroy = function () {
    this.stop();
    document.removeEventListener('visibilitychange', this.onVisibility);
    global.removeEventListener('message', this.onMessage);
    this.root.remove();
  };

  function mount(element, options) {
    var widget = new Widget(element, options || {});
    ensureStyles(widget.relay);
    return { destroy: function () { widget.destroy(); } };
  }

  function randomState() {
    var bytes = new Uint8Array(16);
    global.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ('0' + b.toString(16)).slice(-2); }).join('');
  }

  /** Opens the hosted page in a popup; resolves with {ticket, state} from the relay's window. */
  function popup(options) {
    options = options || {};
    var relay = (options.relay || global.location.origin).replace(/\/+$/, '');
    var relayOrigin = originOf(relay);
    var state = options.state || randomState();
    var query = ['connection', options.connection, 'redirect_uri', options.redirectUri, 'state', state, 'mode', 'popup']
      .concat(options.lang ? ['lang', options.lang] : []);
    var parts = [];
    for (var i = 0; i < query.length; i += 2) parts.push(query[i] + '=' + encodeURIComponent(query[i + 1] || ''));
    var width = 420, height = 560;
    var left = (global.screenX || 0) + Math.max(0, ((global.outerWidth || width) - width) / 2);
    var top = (global.screenY || 0) + Math.max(0, ((global.outerHeight || height) - height) / 2);
    var lang = STRINGS[pickLang(options.lang)];
    return new Promise(function (resolve, reject) {
      var win = global.open(relay + '/login?' + parts.join('&'), 'qrlogin',
        'popup,width=' + width + ',height=' + height + ',left=' + left + ',top=' + top);
      if (!win) return reject(new Error(lang.popupBlocked));
      var watch = global.setInterval(function () {
        if (win.closed) { cleanup(); reject(new Error(lang.popupClosed)); }
      }, 500);
      function cleanup() {
        global.clearInterval(watch);
        global.removeEventListener('message', onMessage);
      }
      function onMessage(event) {
        var data = event.data;
        if (event.origin !== relayOrigin || event.source !== win) return;
        if (!data || data.type !== 'qrlogin' || data.state !== state) return;
        cleanup();
        // The popup closes once it hears we have the ticket (closing sooner could drop the
        // message: a closed window's messages may arrive without their source).
        win.postMessage({ type: 'qrlogin-received', state: state }, relayOrigin);
        resolve({ ticket: data.ticket, state: data.state });
      }
      global.addEventListener('message', onMessage);
    });
  }

  /** The hosted page: the widget, then the ticket to the site (redirect, form post or opener). */
  function hostedPage(config, element) {
    var storageKey = 'qrlogin-resume:' + config.connection + ':' + config.state;
    function deliver(result) {
      var target = originOf(config.redirect_uri);
      if (config.mode === 'popup' && global.opener) {
        global.addEventListener('message', function (event) {
          var data = event.data;
          if (event.origin === target && data && data.type === 'qrlogin-received' && data.state === config.state) global.close();
        });
        global.opener.postMessage({ type: 'qrlogin', ticket: result.ticket, state: config.state }, target);
        // An opener that never answers (navigated away) still gets its window closed.
        global.setTimeout(function () { global.close(); }, POPUP_CLOSE_FALLBACK_MS);
        return;
      }
      if (config.response_mode === 'form_post') {
        var form = el('form', '', document.body);
        form.method = 'POST';
        form.action = config.redirect_uri;
        [['ticket', result.ticket], ['state', config.state]].forEach(function (field) {
          var input = el('input', '', form);
          input.type = 'hidden';
          input.name = field[0];
          input.value = field[1];
        });
        form.submit();
        return;
      }
      var url = new URL(config.redirect_uri);
      url.searchParams.set('ticket', result.ticket);
      url.searchParams.set('state', config.state);
      global.location.replace(url.toString());
    }
    return mount(element, {
      connection: config.connection,
      lang: config.lang,
      returnTo: global.location.pathname + global.location.search,
      // Coming back from WeChat's page (redirect mode): follow the session this tab started.
      resume: function () {
        var saved = global.sessionStorage && global.sessionStorage.getItem(storageKey);
        if (!saved) return null;
        global.sessionStorage.removeItem(storageKey);
        try { return JSON.parse(saved); } catch (e) { return null; }
      },
      remember: function (session) {
        global.sessionStorage.setItem(storageKey, JSON.stringify({
          id: session.id, secret: session.secret, ws_url: session.wsUrl, website_url: session.websiteUrl,
          expires_in: Math.max(0, Math.round((session.deadline - Date.now()) / 1000))
        }));
      },
      onSuccess: deliver,
      onRefused: config.refusal_to_redirect ? function () {
        var url = new URL(config.redirect_uri);
        url.searchParams.set('error', 'access_denied');
        url.searchParams.set('state', config.state);
        global.location.replace(url.toString());
      } : null
    });
  }

  global.QrLogin = { mount: mount, popup: popup };

  var script = document.currentScript;
  if (script && script.hasAttribute('data-hosted-page')) {
    var boot = function () {
      var config = JSON.parse(document.getElementById('qrlogin-config').textContent);
      hostedPage(config, document.getElementById('qrlogin'));
    };
    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
    else boot();
  }
})(window);
