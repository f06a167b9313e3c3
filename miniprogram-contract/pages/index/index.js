// The first page: what someone sees when they open the mini-program without a login code (from
// the recent list, a search, a share). It explains how to log in; opened with a code, it hands
// the code to the login page.
const text = require('../../utils/text.js')

Page({
  data: { t: {} },

  onLoad(options) {
    if (options && (options.scene || options.q)) {
      const query = Object.keys(options)
        .map((k) => k + '=' + encodeURIComponent(options[k]))
        .join('&')
      wx.redirectTo({ url: '/pages/login/login?' + query })
      return
    }
    const t = text.strings(text.language())
    this.setData({ t })
    wx.setNavigationBarTitle({ title: t.title })
  },
})
