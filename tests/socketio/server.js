// One Socket.IO server process with the default in-memory adapter: a client's
// session lives in this process only. Listens on 127.0.0.1:0 and prints its port.
const http = require("http");
const { Server } = require("socket.io");

const httpServer = http.createServer();
const io = new Server(httpServer);
io.on("connection", (socket) => {
  socket.on("msg", (text, ack) => ack({ pid: process.pid, text }));
});
httpServer.listen(0, "127.0.0.1", () => {
  console.log(JSON.stringify({ port: httpServer.address().port }));
});
