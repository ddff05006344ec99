// A WebSocket echo in Workers' API: the same module for isola and workerd.
export default {
  fetch(request) {
    if (request.headers.get("upgrade") !== "websocket") {
      return new Response("WebSockets only", { status: 426 });
    }
    const [client, server] = Object.values(new WebSocketPair());
    server.accept();
    server.addEventListener("message", (event) => server.send(event.data));
    return new Response(null, { status: 101, webSocket: client });
  },
};
