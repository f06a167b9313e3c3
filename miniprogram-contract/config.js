// Where this mini-program confirms logins. RELAY's host must be one of the mini-program's legal
// request domains (mp.weixin.qq.com → 开发管理 → 开发设置 → 服务器域名 → request 合法域名).
module.exports = {
  RELAY: 'https://relay.example.com',

  // Sandbox mode, for trying the pages in WeChat DevTools against `qrlogin-relay sandbox` before
  // WeChat has approved anything. Only when this is set does the page take its login and phone
  // codes from the sandbox's WeChat simulator instead of wx.login and the phone-number button.
  // Never ship a build with it set: a real relay has no simulator and refuses these codes.
  //
  // SANDBOX: {
  //   wechat: 'http://127.0.0.1:8080/sandbox/wechat', // the simulator (the sandbox relay's own)
  //   user: 'alice',                                  // who "you" are: same user, same openid
  //   phone: '13800138000',                           // the number the phone button "returns"
  //   appid: undefined,                               // the AppID codes are for; default: the sandbox's
  // },
  SANDBOX: null,
}
