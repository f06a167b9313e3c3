// Where the page's WeChat codes come from: wx.login and the phone-number button, or — only in
// sandbox mode (config.SANDBOX) — the sandbox relay's WeChat simulator.
const config = require('../config.js')
const { post } = require('./relay.js')

function sandbox() {
  return config.SANDBOX || null
}

function mint(kind, extra) {
  const s = sandbox()
  return post(s.wechat + '/_sim/' + kind, Object.assign({ user: s.user, appid: s.appid }, extra)).then(
    (body) => body.code,
  )
}

// The login code for /v1/mp/scan.
function loginCode() {
  if (sandbox()) return mint('login-code', {})
  return new Promise((resolve, reject) =>
    wx.login({
      success: (res) => (res.code ? resolve(res.code) : reject({ error: 'wechat_login_failed' })),
      fail: () => reject({ error: 'wechat_login_failed' }),
    }),
  )
}

// The phone code for /v1/mp/confirm, minted by the simulator (sandbox mode only; otherwise the
// code comes from the getPhoneNumber button's event).
function sandboxPhoneCode() {
  return mint('phone-code', { phone: sandbox().phone })
}

module.exports = { sandbox, loginCode, sandboxPhoneCode }
