// The login page a login code opens: check the code, show who is asking, confirm with the
// person's phone number or cancel. Views: checking → confirm → (phone_refused) → confirming →
// done | cancelled | expired | error.
const relay = require('../../utils/relay.js')
const codes = require('../../utils/codes.js')
const text = require('../../utils/text.js')

// Views in which the person has scanned but not finished: leaving the page cancels the login.
const OPEN_VIEWS = ['confirm', 'phone_refused', 'error']

// The login session id: a sun code carries it as `scene`, a link QR code as the last path
// segment of the link in `q`. Both arrive URL-encoded.
function sceneOf(options) {
  if (options.scene) return decodeURIComponent(options.scene)
  const link = decodeURIComponent(options.q || '')
  return link ? link.slice(link.lastIndexOf('/') + 1).split('?')[0] : ''
}

Page({
  data: {
    view: 'checking',
    t: {},
    session: null,
    remaining: '',
    message: '',
    retry: '', // '' | 'scan' | 'phone': what trying again means
    sandbox: false,
    privacy: null, // { contract } while WeChat waits for the person's privacy consent
  },

  onLoad(options) {
    this.lang = text.language()
    const t = text.strings(this.lang)
    this.setData({ t, sandbox: Boolean(codes.sandbox()) })
    wx.setNavigationBarTitle({ title: t.title })
    this.scene = sceneOf(options || {})
    if (!this.scene) {
      // Opened without a code (the recent list, a share, a bookmark): explain instead.
      wx.reLaunch({ url: '/pages/index/index' })
      return
    }
    if (wx.onNeedPrivacyAuthorization) {
      wx.onNeedPrivacyAuthorization((resolve) => this.askPrivacy(resolve))
    }
    this.scan()
  },

  onUnload() {
    this.stopCountdown()
    this.unloaded = true
    // Leaving before confirming cancels, so the computer is not left waiting.
    if (this.scanToken && !this.busy && OPEN_VIEWS.includes(this.data.view)) {
      relay.cancel({ scene: this.scene, scan_token: this.scanToken }).catch(() => {})
    }
  },

  // Scan: prove who is scanning (a login code) and how the code was opened — the scene of *this*
  // entry: on a hot start wx.getLaunchOptionsSync() still names the first one.
  scan() {
    this.setData({ view: 'checking', message: '', retry: '' })
    const launchScene = wx.getEnterOptionsSync().scene
    codes
      .loginCode()
      .then((login_code) => relay.scan({ scene: this.scene, login_code, launch_scene: launchScene }))
      .then(({ scan_token, session }) => {
        // Left while the scan was on its way: undo it, so the computer is not left waiting.
        if (this.unloaded) return relay.cancel({ scene: this.scene, scan_token }).catch(() => {})
        this.scanToken = scan_token
        this.setData({ view: 'confirm', session })
        this.startCountdown(session.expires_in)
      })
      .catch((failure) => this.fail(failure, 'scan'))
  },

  // The phone-number button's answer: a code, a refusal (of the phone sheet or of the privacy
  // prompt), or WeChat's quota for the component is spent.
  onPhone(e) {
    const detail = (e && e.detail) || {}
    if (detail.code) return this.confirm(detail.code)
    if (detail.errno === 1400001) return this.fail({ error: 'phone_quota' }, 'phone')
    this.setData({ view: 'phone_refused', message: '', retry: '' })
  },

  // Sandbox mode only: the simulator stands in for the phone-number button.
  onSandboxPhone() {
    codes
      .sandboxPhoneCode()
      .then((code) => this.confirm(code))
      .catch((failure) => this.fail(failure, 'phone'))
  },

  confirm(phoneCode) {
    this.busy = true
    this.setData({ view: 'confirming', message: '', retry: '' })
    relay
      .confirm({ scene: this.scene, scan_token: this.scanToken, phone_code: phoneCode })
      .then(() => this.finish('done'))
      .catch((failure) => this.fail(failure, 'phone'))
      .then(() => {
        this.busy = false
      })
  },

  onCancel() {
    this.busy = true
    relay
      .cancel({ scene: this.scene, scan_token: this.scanToken })
      .then(() => this.finish('cancelled'))
      .catch((failure) => this.fail(failure, 'cancel'))
      .then(() => {
        this.busy = false
      })
  },

  onRetry() {
    this.scan()
  },

  // A failed step: an expired code gets its own view; the rest a message, with a retry of the
  // step that failed where retrying can help (a scan token the relay no longer knows means
  // scanning again; a failed cancel offers the choices again).
  fail(failure, step) {
    if (this.unloaded) return
    if (failure.error === 'session_expired') return this.finish('expired')
    const { message, retry } = text.explain(this.lang, failure)
    const again = retry ? (failure.error === 'invalid_scan_token' || step === 'scan' ? 'scan' : 'phone') : ''
    if (!again) {
      this.stopCountdown()
      this.scanToken = null
    }
    this.setData({ view: 'error', message, retry: again })
  },

  finish(view) {
    this.stopCountdown()
    this.scanToken = null
    this.setData({ view, message: '', retry: '' })
  },

  startCountdown(seconds) {
    this.stopCountdown()
    const deadline = Date.now() + seconds * 1000
    const tick = () => {
      const left = (deadline - Date.now()) / 1000
      if (left <= 0) return this.finish('expired')
      this.setData({ remaining: text.clock(left) })
    }
    tick()
    this.timer = setInterval(tick, 1000)
  },

  stopCountdown() {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
  },

  // WeChat's privacy authorization: the phone button waits until the person answers here.
  askPrivacy(resolve) {
    this.privacyResolve = resolve
    resolve({ event: 'exposureAuthorization' })
    const show = (setting) => this.setData({ privacy: { contract: (setting && setting.privacyContractName) || '' } })
    if (wx.getPrivacySetting) wx.getPrivacySetting({ success: show, fail: () => show() })
    else show()
  },

  onPrivacyAgree(e) {
    this.answerPrivacy({ event: 'agree', buttonId: e.currentTarget.id })
  },

  onPrivacyDisagree() {
    this.answerPrivacy({ event: 'disagree' })
  },

  answerPrivacy(answer) {
    const resolve = this.privacyResolve
    this.privacyResolve = null
    this.setData({ privacy: null })
    if (resolve) resolve(answer)
  },

  onPrivacyContract() {
    wx.openPrivacyContract({})
  },
})
