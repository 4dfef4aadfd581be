// JsSIP (the browser SIP library) registers over WebSocket, run by Node: tests/test_websocket.py.
// node jssip_register.js URL USER PASSWORD DOMAIN: prints "registered" or why not.
global.WebSocket = require('ws');
const JsSIP = require('jssip');
const [url, user, password, domain] = process.argv.slice(2);
const socket = new JsSIP.WebSocketInterface(url);
const ua = new JsSIP.UA({ sockets: [socket], uri: `sip:${user}@${domain}`, password, register: true,
  register_expires: 300, session_timers: false });
const done = (line, code) => { console.log(line); ua.stop(); setTimeout(() => process.exit(code), 300); };
ua.on('registered', () => done('registered', 0));
ua.on('registrationFailed', (e) => done('registrationFailed ' + e.cause, 1));
setTimeout(() => done('timeout', 2), 8000);
ua.start();
