// A Node.js server written for a fixed port: listen(PORT), as most are.
// Under hotswap it needs --intercept; with LISTEN_FDS set and USE_FD=1 it
// takes the inherited socket (fd 3) instead.
const http = require('http');
const gen = process.env.HOTSWAP_GENERATION || '?';
const server = http.createServer((req, res) => {
  res.setHeader('X-Version', 'gen ' + gen);
  if (process.env.HOTSWAP_WORKER) res.setHeader('X-Worker', process.env.HOTSWAP_WORKER);
  res.end('ok\n');
});
if (process.env.USE_FD === '1') {
  server.listen({ fd: 3 });
} else {
  server.listen(Number(process.env.PORT), '127.0.0.1');
}
// Graceful stop: close the listener, finish what is in flight, exit.
process.on('SIGTERM', () => server.close(() => process.exit(0)));
