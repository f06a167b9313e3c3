const { RELAY } = require('../../config.js')

// One relay call; resolves with the JSON body, rejects with the relay's error message.
function call(path, data) {
  return new Promise((resolve, reject) => {
    wx.request({
      url: RELAY + path,
      method: 'POST',
      data,
      success: (res) => (res.statusCode === 200 ? resolve(res.data) : reject(res.data || {})),
      fail: () => reject({ error: 'network', message: 'The network is unavailable; try again.' }),
    })
  })
}

Page({
  data: { session: null, error: '', done: '' },

  onLoad(query) {
    // A sun code carries the session id as `scene`; a link code carries the whole link as `q`.
    const link = decodeURIComponent(query.q || '')
    this.scene = query.scene ? decodeURIComponent(query.scene) : link.slice(link.lastIndexOf('/') + 1)
    // How this page was entered: on a hot start the launch options still name the first scene.
    const launchScene = wx.getEnterOptionsSync().scene
    wx.login({
      success: ({ code }) =>
        call('/v1/mp/scan', { scene: this.scene, login_code: code, launch_scene: launchScene })
          .then(({ scan_token, session }) => {
            this.scanToken = scan_token
            this.setData({ session })
          })
          .catch((e) => this.setData({ error: e.message || 'This code cannot be used.' })),
      fail: () => this.setData({ error: 'WeChat login failed; try again.' }),
    })
  },

  onPhone(e) {
    if (!e.detail.code) {
      // Refused the phone prompt ("…deny"), or the quota is spent: nothing is confirmed.
      return
    }
    call('/v1/mp/confirm', { scene: this.scene, scan_token: this.scanToken, phone_code: e.detail.code })
      .then(() => this.setData({ session: null, done: 'You are logged in on your computer.' }))
      .catch((e) => this.setData({ session: null, error: e.message }))
  },

  onCancel() {
    call('/v1/mp/cancel', { scene: this.scene, scan_token: this.scanToken })
      .then(() => this.setData({ session: null, done: 'Login cancelled.' }))
      .catch((e) => this.setData({ session: null, error: e.message }))
  },
})
