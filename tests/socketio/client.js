// CLIENTS Socket.IO clients forced to HTTP long-polling, each sending MESSAGES
// acknowledged messages through URL; prints {"ok": n, "failed": n}.
const { io } = require("socket.io-client");

const [url, clients = "20", messages = "5"] = process.argv.slice(2);

function oneClient() {
  return new Promise((resolve) => {
    // withCredentials: keep cookies (weir's sticky cookie) between polls.
    const socket = io(url, {
      transports: ["polling"],
      withCredentials: true,
      reconnection: false,
      timeout: 3000,
    });
    let ok = 0;
    const done = () => {
      socket.close();
      resolve({ ok, failed: Number(messages) - ok });
    };
    socket.on("connect_error", done);
    socket.on("connect", async () => {
      for (let i = 0; i < Number(messages); i++) {
        try {
          const reply = await socket.timeout(3000).emitWithAck("msg", `m${i}`);
          if (reply.text === `m${i}`) ok++;
        } catch (e) {
          break;
        }
      }
      done();
    });
  });
}

Promise.all(Array.from({ length: Number(clients) }, oneClient)).then((results) => {
  const total = results.reduce((a, r) => ({ ok: a.ok + r.ok, failed: a.failed + r.failed }), { ok: 0, failed: 0 });
  console.log(JSON.stringify(total));
  process.exit(0);
});
