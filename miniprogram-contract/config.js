// The relay this mini-program confirms logins for. Its host must be a legal request domain.
module.exports = { RELAY: 'https://relay.example.com' }
