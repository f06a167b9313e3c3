// Everything the pages say, in Chinese and English, and what each relay error means to a person.
// Chinese unless WeChat's language is English.

const STRINGS = {
  zh: {
    title: '扫码登录',
    checking: '正在核对登录码…',
    loginTo: '登录到',
    onComputer: '将在这台电脑上登录：',
    ip: 'IP 地址',
    browser: '浏览器',
    expiresIn: '剩余时间',
    warn: '只有在你本人刚刚在电脑上发起登录时才继续。不要替他人扫码。',
    confirm: '用手机号确认登录',
    cancel: '取消登录',
    confirming: '正在登录…',
    done: '已在电脑上登录',
    doneHint: '请回到电脑继续操作。',
    cancelled: '已取消登录',
    cancelledHint: '电脑上的登录已取消。',
    expired: '登录码已过期',
    expiredHint: '请在电脑上刷新二维码后重新扫码。',
    phoneRefused: '需要你的手机号才能登录',
    phoneRefusedHint: '网站要求用手机号确认登录。你可以重试，或者取消这次登录。',
    retry: '重试',
    retryPhone: '重新授权手机号',
    privacyTitle: '隐私保护提示',
    privacyText: '确认登录需要读取你的手机号。请先阅读并同意',
    privacyAgree: '同意',
    privacyDisagree: '拒绝',
    indexTitle: '在电脑上用微信登录',
    indexSteps: ['在电脑上打开网站的登录页面', '用微信“扫一扫”扫描页面上的小程序码', '在手机上核对网站和电脑信息后确认登录'],
    indexNote: '请直接扫描电脑屏幕上的码。转发的图片或从相册识别的码无法登录。',
  },
  en: {
    title: 'Log in on a computer',
    checking: 'Checking the code…',
    loginTo: 'Log in to',
    onComputer: 'on this computer:',
    ip: 'IP address',
    browser: 'Browser',
    expiresIn: 'Time left',
    warn: 'Only continue if you just started this login on a computer yourself. Never scan for someone else.',
    confirm: 'Confirm with my phone number',
    cancel: 'Cancel login',
    confirming: 'Logging in…',
    done: 'You are logged in on the computer',
    doneHint: 'Go back to the computer to continue.',
    cancelled: 'Login cancelled',
    cancelledHint: 'The login on the computer was cancelled.',
    expired: 'This code has expired',
    expiredHint: 'Refresh the code on the computer and scan it again.',
    phoneRefused: 'Your phone number is needed to log in',
    phoneRefusedHint: 'The website confirms logins with your phone number. Try again, or cancel this login.',
    retry: 'Try again',
    retryPhone: 'Share my phone number',
    privacyTitle: 'Privacy notice',
    privacyText: 'Confirming reads your phone number. Please read and agree to',
    privacyAgree: 'Agree',
    privacyDisagree: 'Decline',
    indexTitle: 'Log in on a computer with WeChat',
    indexSteps: ['Open the website’s login page on the computer', 'Scan the code on the page with WeChat’s Scan', 'Check the website and computer on your phone, then confirm'],
    indexNote: 'Scan the code on the computer’s screen directly: a forwarded picture or a code picked from the album cannot log in.',
  },
}

// A request this page should never send: the build is broken.
const PAGE_BUG = { zh: '小程序版本有问题，请更新后重试。', en: 'This version of the mini-program has a problem. Update it and try again.' }

// Each error code: what it means to the person, and whether trying again can help.
const ERRORS = {
  network: { retry: true, zh: '网络不可用，请检查网络后重试。', en: 'No network connection. Check it and try again.' },
  wechat_login_failed: { retry: true, zh: '微信登录失败，请重试。', en: 'WeChat could not log you in. Try again.' },
  invalid_code: { retry: true, zh: '微信验证已失效，请重试。', en: 'WeChat’s check expired. Try again.' },
  wechat_busy: { retry: true, zh: '微信繁忙，请稍后重试。', en: 'WeChat is busy. Try again in a moment.' },
  wechat_unavailable: { retry: true, zh: '暂时连不上微信，请稍后重试。', en: 'WeChat cannot be reached right now. Try again in a moment.' },
  account_hook_unavailable: { retry: true, zh: '网站的账号服务暂时没有响应，请重试。', en: 'The website’s account service did not answer. Try again.' },
  rate_limited: { retry: true, zh: '操作太频繁，请稍后重试。', en: 'Too many attempts. Wait a moment and try again.' },
  body_timeout: { retry: true, zh: '网络太慢，请求没有送达，请重试。', en: 'The network was too slow to send this. Try again.' },
  store_unavailable: { retry: true, zh: '登录服务暂时不可用，请稍后重试。', en: 'The login service is briefly unavailable. Try again in a moment.' },
  internal_error: { retry: true, zh: '登录服务出错了，请重试。', en: 'The login service had a problem. Try again.' },
  invalid_scan_token: { retry: true, zh: '这次扫码已失效，请重试。', en: 'This scan is no longer valid. Try again.' },
  session_not_found: { zh: '这个登录码无效。请在电脑上刷新后重新扫码。', en: 'This login code is not valid. Refresh it on the computer and scan again.' },
  session_expired: { zh: '登录码已过期。请在电脑上刷新后重新扫码。', en: 'This code has expired. Refresh it on the computer and scan again.' },
  session_cancelled: { zh: '这次登录已在电脑上取消。', en: 'This login was cancelled on the computer.' },
  session_taken: { zh: '这个登录码已被其他微信用户扫描。请在电脑上刷新后重新扫码。', en: 'Someone else already scanned this code. Refresh it on the computer and scan again.' },
  already_confirmed: { zh: '这次登录已经确认过了。', en: 'This login is already confirmed.' },
  session_denied: { zh: '网站拒绝了这个微信账号登录。', en: 'The website refused this WeChat account.' },
  account_denied: { zh: '网站拒绝了这个微信账号登录', en: 'The website refused this WeChat account', reason: true },
  forwarded_scan_refused: { zh: '请直接扫描电脑屏幕上的码，不要使用转发或保存的图片。', en: 'Scan the code on the computer’s screen, not a forwarded or saved picture.' },
  launch_scene_required: { zh: '请用微信“扫一扫”直接扫描电脑屏幕上的码。', en: 'Use WeChat’s Scan on the code on the computer’s screen.' },
  wrong_login_path: { zh: '这个码需要在网页上用微信扫码登录，不能用小程序确认。', en: 'This code is for WeChat’s website login, not this mini-program.' },
  not_scanned: { retry: true, zh: '请重新扫码。', en: 'Scan the code again.' },
  signing_unavailable: { retry: true, zh: '登录服务暂时不可用，请稍后重试。', en: 'The login service is briefly unavailable. Try again in a moment.' },
  wechat_bad_response: { retry: true, zh: '微信返回了异常结果，请重试。', en: 'WeChat gave an unexpected answer. Try again.' },
  wechat_rejected: { zh: '这个小程序在登录服务中的配置有误，请联系网站。', en: 'This mini-program is misconfigured in the login service. Contact the website.' },
  connection_removed: { zh: '这个网站已停用微信登录。', en: 'This website no longer offers WeChat login.' },
  already_redeemed: { zh: '这次登录已经完成了。', en: 'This login is already complete.' },
  invalid_json: PAGE_BUG,
  invalid_body: PAGE_BUG,
  body_too_large: PAGE_BUG,
  unsupported_media_type: PAGE_BUG,
  phone_quota: { zh: '这个小程序今天无法验证手机号，请联系网站。', en: 'This mini-program cannot verify phone numbers right now. Contact the website.' },
}

const UNKNOWN = { zh: '出了点问题，请在电脑上刷新后重新扫码。', en: 'Something went wrong. Refresh the code on the computer and scan again.' }

function language() {
  const info = wx.getAppBaseInfo ? wx.getAppBaseInfo() : wx.getSystemInfoSync()
  return /^en/i.test((info && info.language) || '') ? 'en' : 'zh'
}

function strings(lang) {
  return STRINGS[lang]
}

// What to show for a failed call: { message, retry }. The website's own reason is shown for an
// account-hook refusal; a relay message is never shown raw (it is English, for developers).
function explain(lang, failure) {
  const code = (failure && failure.error) || ''
  const known = ERRORS[code]
  if (!known) return { code, retry: false, message: UNKNOWN[lang] + ' (' + code + ')' }
  let message = known[lang]
  if (known.reason) {
    const end = lang === 'zh' ? '。' : '.'
    message += failure.message ? (lang === 'zh' ? '：' : ': ') + failure.message : end
  }
  return { code, retry: Boolean(known.retry), message }
}

// "Chrome 131 · Windows" comes from the relay; seconds become m:ss.
function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds))
  return Math.floor(s / 60) + ':' + String(s % 60).padStart(2, '0')
}

module.exports = { language, strings, explain, clock, ERRORS }
