// A stand-in for the mini-program runtime, enough to run the real page code of
// miniprogram-contract/ in Node: `wx` (request over real HTTP, login and the phone button backed
// by the relay's WeChat simulator, launch options, privacy), `Page()` and a page instance with
// `setData`. What WeChat itself would do is done here; what the page does is the page's code.
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../miniprogram-contract');

/** The runtime for one person's phone. */
export function makeWx({ wechat, user, enterScene = 1047, launchScene = enterScene, language = 'zh_CN' }) {
  const wx = {
    user,
    navigations: [],
    privacyListener: null,
    privacyAgreed: false,
    loginCalls: 0,
    request({ url, method = 'GET', data, header = {}, success, fail }) {
      const body = method === 'GET' ? undefined : JSON.stringify(data ?? {});
      fetch(url, { method, headers: header, body })
        .then(async (res) => {
          const textBody = await res.text();
          let parsed = textBody;
          try {
            parsed = JSON.parse(textBody);
          } catch {}
          success?.({ statusCode: res.status, data: parsed, header: Object.fromEntries(res.headers) });
        })
        .catch(() => fail?.({ errMsg: 'request:fail' }));
    },
    login({ success, fail }) {
      wx.loginCalls += 1;
      mint(wechat, 'login-code', { user }).then((code) => success({ code, errMsg: 'login:ok' }), () => fail?.({}));
    },
    getEnterOptionsSync: () => ({ scene: enterScene, query: {} }),
    getLaunchOptionsSync: () => ({ scene: launchScene, query: {} }),
    getAppBaseInfo: () => ({ language }),
    setNavigationBarTitle() {},
    reLaunch: ({ url }) => wx.navigations.push(['reLaunch', url]),
    redirectTo: ({ url }) => wx.navigations.push(['redirectTo', url]),
    onNeedPrivacyAuthorization(listener) {
      wx.privacyListener = listener;
    },
    getPrivacySetting: ({ success }) =>
      success({ needAuthorization: !wx.privacyAgreed, privacyContractName: '《示例隐私保护指引》' }),
    openPrivacyContract() {},
  };
  return wx;
}

async function mint(wechat, kind, body) {
  const res = await fetch(`${wechat}/_sim/${kind}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`${kind}: ${res.status}`);
  return (await res.json()).code;
}

/**
 * The person taps the getPhoneNumber button. As WeChat does: first the privacy prompt if not yet
 * agreed (the page's listener decides), then the phone sheet, where the person allows or refuses.
 */
export async function tapPhoneButton(wx, page, { allow = true, phone = '13800138000', wechat } = {}) {
  if (!wx.privacyAgreed && wx.privacyListener) {
    const answer = await new Promise((resolve) => wx.privacyListener(rememberLast(resolve)));
    if (answer.event !== 'agree' || answer.buttonId !== 'agree-privacy') {
      return page.onPhone({ detail: { errMsg: 'getPhoneNumber:fail privacy permission is not authorized', errno: 104 } });
    }
    wx.privacyAgreed = true;
  }
  if (!allow) return page.onPhone({ detail: { errMsg: 'getPhoneNumber:fail user deny' } });
  const code = await mint(wechat, 'phone-code', { user: wx.user, phone });
  return page.onPhone({ detail: { errMsg: 'getPhoneNumber:ok', code } });
}

// The page's resolve may first be called with `exposureAuthorization`: wait for the decision.
function rememberLast(resolve) {
  return (answer) => {
    if (answer.event !== 'exposureAuthorization') resolve(answer);
  };
}

/** Pages loaded and not yet left; `leaveAll()` unloads them as WeChat does on closing. */
const open = new Set();

export function leaveAll() {
  for (const page of open) page.onUnload?.();
  open.clear();
}

/** Loads a page's real code with `wx` and `config` in place, and mounts an instance of it. */
export function loadPage(name, wx, config) {
  for (const key of Object.keys(require.cache)) {
    if (key.startsWith(ROOT)) delete require.cache[key];
  }
  Object.assign(require(path.join(ROOT, 'config.js')), config);
  let definition = null;
  globalThis.wx = wx;
  globalThis.Page = (d) => {
    definition = d;
  };
  require(path.join(ROOT, 'pages', name, `${name}.js`));
  if (!definition) throw new Error(`pages/${name} did not call Page()`);
  const page = Object.assign(Object.create(null), definition);
  page.data = structuredClone(definition.data ?? {});
  page.setData = (patch, callback) => {
    Object.assign(page.data, patch);
    callback?.();
  };
  const onUnload = page.onUnload;
  page.onUnload = function () {
    open.delete(page);
    return onUnload?.call(this);
  };
  open.add(page);
  return page;
}

/** Resolves once `condition()` holds; fails with the page's data if it does not within `ms`. */
export async function until(condition, describe, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${describe()}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
