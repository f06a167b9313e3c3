// The relay's mini-program API over wx.request. Resolves with the JSON answer; rejects with
// { error, message } — the relay's error body, or { error: 'network' } when no answer came.
const config = require('../config.js')

function post(url, data) {
  return new Promise((resolve, reject) => {
    wx.request({
      url,
      method: 'POST',
      data,
      header: { 'content-type': 'application/json' },
      timeout: 15000,
      success: (res) => {
        if (res.statusCode === 200) return resolve(res.data)
        const body = res.data && typeof res.data === 'object' ? res.data : {}
        reject({ error: body.error || 'http_' + res.statusCode, message: body.message || '' })
      },
      fail: () => reject({ error: 'network', message: '' }),
    })
  })
}

module.exports = {
  post,
  scan: (body) => post(config.RELAY + '/v1/mp/scan', body),
  confirm: (body) => post(config.RELAY + '/v1/mp/confirm', body),
  cancel: (body) => post(config.RELAY + '/v1/mp/cancel', body),
}
